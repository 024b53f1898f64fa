"""A login storm against the auth service, and how its JWKS and refresh answer meanwhile.

One auth worker runs pinned to CPU 0 with the default bcrypt cost; wrk on
CPU 1 sends password grants over 64 connections while two probes (also on
CPU 1) time ``GET /.well-known/jwks.json`` and refresh-token rotations, one
request at a time. Printed: sign-ins per second, how many got the fast 503,
sign-ins/s x bcrypt time (about 1 when bcrypt alone bounds throughput on the
one core), and the probes' p50/p99 before and during the storm.

    uv run python -m tests.bench.auth_storm [--seconds 15] [--env NAME=VALUE ...]
"""

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import bcrypt
import httpx
import psutil

from taskstack.auth.keys import generate_signing_key
from taskstack.common.migrations import upgrade
from taskstack.dev.services import SERVICES
from tests.bench.sync_vs_async import parse_wrk
from tests.support.auth import STRONG_PASSWORD, login, refresh, register
from tests.support.postgres import PostgresServer
from tests.support.processes import service_process

USERS = 8
COST = 12


def storm_script(emails: list[str]) -> str:
    bodies = ",".join(
        f'"grant_type=password&username={email}&password={STRONG_PASSWORD.replace(" ", "+")}"'
        for email in emails
    )
    return f"""
local bodies = {{{bodies}}}
local n = 0
request = function()
  n = n + 1
  local h = {{["Content-Type"] = "application/x-www-form-urlencoded"}}
  return wrk.format("POST", "/v1/auth/token", h, bodies[(n % #bodies) + 1])
end
"""


class Probe(threading.Thread):
    """Times one kind of request, one at a time, until stopped."""

    def __init__(self, base_url: str, kind: str, email: str):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, timeout=30)
        self.kind = kind
        self.email = email
        self.samples: list[tuple[float, float, int]] = []  # (start, seconds, status)
        self.stop = threading.Event()

    def run(self) -> None:
        token = ""
        if self.kind == "refresh":
            token = login(self.client, self.email).json()["refresh_token"]
        while not self.stop.is_set():
            started = time.perf_counter()
            if self.kind == "jwks":
                status = self.client.get("/.well-known/jwks.json").status_code
            else:
                response = refresh(self.client, token)
                status = response.status_code
                if status == 200:
                    token = response.json()["refresh_token"]
            self.samples.append((started, time.perf_counter() - started, status))
            time.sleep(0.01)

    def between(self, start: float, end: float) -> str:
        times = sorted(s for t, s, _ in self.samples if start <= t < end)
        statuses = {c for t, _, c in self.samples if start <= t < end}
        if not times:
            return "no samples"
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        return (
            f"n={len(times)} p50 {statistics.median(times) * 1000:.1f} ms "
            f"p99 {p99 * 1000:.1f} ms statuses {sorted(statuses)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE (repeatable)")
    args = parser.parse_args()

    salt = bcrypt.gensalt(COST)
    started = time.perf_counter()
    for _ in range(3):
        bcrypt.hashpw(b"x" * 64, salt)
    hash_seconds = (time.perf_counter() - started) / 3

    server = PostgresServer(args.server_url, owns_database=False)
    url = server.create_database("taskstack_bench_auth")
    try:
        for service in SERVICES:
            upgrade(url, service.history)
        with tempfile.TemporaryDirectory(prefix="taskstack-bench-") as tmp:
            keys = Path(tmp) / "keys"
            keys.mkdir()
            generate_signing_key(keys)
            env = {
                "DATABASE_URL": url.render_as_string(hide_password=False),
                "AUTH_SIGNING_KEYS_DIR": str(keys),
                "AUTH_BCRYPT_COST": str(COST),
                **dict(pair.split("=", 1) for pair in args.env),
            }
            factory = "taskstack.auth.main:create_app"
            with service_process(factory, env, ready_path="/readyz") as svc:
                proc = psutil.Process(svc.process.pid)
                subprocess.run(
                    ["taskset", "-a", "-p", "-c", "0", str(proc.pid)],
                    check=True,
                    capture_output=True,
                )
                emails = [f"storm{i}@example.com" for i in range(USERS)]
                with httpx.Client(base_url=svc.base_url, timeout=60) as client:
                    for email in emails:
                        assert register(client, email).status_code == 201
                probes = [Probe(svc.base_url, kind, emails[0]) for kind in ("jwks", "refresh")]
                for probe in probes:
                    probe.start()
                time.sleep(3)
                quiet_end = storm_start = time.perf_counter()
                script = Path(tmp) / "storm.lua"
                script.write_text(storm_script(emails[1:]))
                out = subprocess.run(
                    [
                        "taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}",
                        f"-d{args.seconds}s", "--timeout", "30s", "--latency",
                        "-s", str(script), svc.base_url,
                    ],
                    capture_output=True, text=True, check=True, timeout=args.seconds + 60,
                )  # fmt: skip
                storm_end = time.perf_counter()
                for probe in probes:
                    probe.stop.set()
                    probe.join(60)
                rss = proc.memory_info().rss / 2**20
    finally:
        server.drop_scratch_databases()

    storm = parse_wrk(out.stdout)
    total = sum(int(line.split()[0]) for line in out.stdout.splitlines() if "requests in" in line)
    ok_rate = (total - storm["non_2xx"]) / args.seconds
    print(f"bcrypt cost {COST}: {hash_seconds * 1000:.0f} ms per hash on one core")
    print(
        f"storm: {storm['rps']:.1f} req/s, {ok_rate:.1f} sign-ins/s, {storm['non_2xx']:.0f} "
        f"non-2xx (fast 503s), p50 {storm['p50_ms']:.0f} ms, p99 {storm['p99_ms']:.0f} ms"
    )
    print(f"sign-ins/s x hash time = {ok_rate * hash_seconds:.2f} (1 core for the service)")
    for probe in probes:
        print(f"{probe.kind:>8} quiet:  {probe.between(0, quiet_end)}")
        print(f"{probe.kind:>8} storm:  {probe.between(storm_start, storm_end)}")
    print(f"auth RSS after the run: {rss:.0f} MB")


if __name__ == "__main__":
    main()
