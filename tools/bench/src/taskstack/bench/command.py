"""The `taskstack bench` subcommand: its arguments, and what it prints."""

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from taskstack.bench.runner import SCENARIOS, BenchOptions, bench
from taskstack.common.settings import normalize_database_url

_SMOKE = {
    "users": 20,
    "tasks": 2000,
    "duration": 1,
    "warmup": 0,
    "bcrypt_cost": 4,
    "connections": 8,
    "overload_connections": 200,
}
_SMALL = {"users": 100, "tasks": 20_000}


def add_bench_command(commands: "argparse._SubParsersAction[Any]") -> None:
    parser = commands.add_parser(
        "bench",
        help="load-test both services with wrk and print the table and the targets",
        description="Seed a fresh database, run auth, tasks and the floor (the tasks "
        "requests on tuned psycopg, no framework) as one uvicorn worker each on CPU 0, "
        "check that the floor answers as the service does, load them with wrk on CPU 1, "
        "print requests/s, latency, CPU per request, RSS and the ratios, and write them "
        "as JSON. Any non-2xx answer, socket error or difference between the floor's "
        "answers and the service's fails the run (exit status 1).",
    )
    parser.add_argument(
        "--database-url",
        type=_database_url,
        help="a PostgreSQL server to create the benchmark databases on "
        "(default: a private embedded PostgreSQL)",
    )
    parser.add_argument("--duration", type=_seconds, default=10, help="per scenario (10s)")
    parser.add_argument("--warmup", type=_seconds, default=3, help="before each scenario (3s)")
    parser.add_argument("--connections", type=_positive, default=32, help="per scenario (32)")
    parser.add_argument(
        "--overload-connections",
        type=_positive,
        default=4000,
        help="of the overload scenario's overload phase, against one worker (4000)",
    )
    parser.add_argument("--users", type=_positive, default=1000, help="seeded users (1000)")
    parser.add_argument("--tasks", type=_positive, default=200_000, help="seeded tasks (200000)")
    parser.add_argument(
        "--bcrypt-cost", type=int, choices=range(4, 17), default=12, metavar="{4..16}",
        help="the auth service's bcrypt cost (12, the production minimum)",
    )  # fmt: skip
    parser.add_argument(
        "--small", action="store_true", help="100 users and 20,000 tasks, for a quicker look"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a check in seconds: 20 users, 2,000 tasks, 1 s per scenario, 8 connections",
    )
    parser.add_argument(
        "--only",
        type=_scenarios,
        default=SCENARIOS,
        help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("bench-results.json"), help="(bench-results.json)"
    )
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> None:
    values = {
        "users": args.users,
        "tasks": args.tasks,
        "duration": args.duration,
        "warmup": args.warmup,
        "bcrypt_cost": args.bcrypt_cost,
        "connections": args.connections,
        "overload_connections": args.overload_connections,
    }
    if args.small:
        values |= _SMALL
    if args.smoke:
        values |= _SMOKE
    report = bench(
        BenchOptions(
            database_url=args.database_url,
            only=args.only,
            **values,
        )
    )
    print()
    print(report.table())
    report.write(args.output)
    print(f"\nresults written to {args.output}")
    if report.failures:
        print(f"taskstack: bench failed: {'; '.join(report.failures)}", file=sys.stderr)
        raise SystemExit(1)


def _database_url(value: str) -> object:
    try:
        return normalize_database_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)?", value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 10s or 1m")
    return int(match[1]) * (60 if match[2] == "m" else 1)


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def _scenarios(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if unknown := [name for name in names if name not in SCENARIOS]:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown)}; choose from {','.join(SCENARIOS)}"
        )
    return names
