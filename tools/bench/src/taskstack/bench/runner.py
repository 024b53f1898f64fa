"""Runs the benchmark: databases, seeding, pinned servers, every scenario, the report."""

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key
from taskstack.bench import fidelity, micro, overloaded, signins, workload, wrk
from taskstack.bench.database import libpq, postgres_server, scratch_database
from taskstack.bench.environment import (
    AUDIENCE,
    CURSOR_SECRET,
    ISSUER,
    PEPPER,
    run_context,
    server_version,
    service_env,
)
from taskstack.bench.processes import SERVER_CPU, Server, cpu_busy_seconds, launch
from taskstack.bench.report import MB, Report, Scenario
from taskstack.bench.seed import DataSet, password_hash, seed
from taskstack.bench.signins import SHED
from taskstack.bench.workload import Tokens

SCENARIOS = (
    "livez", "list", "floor-list", "list-2k", "deep", "filtered", "get", "floor-get", "create",
    "floor-create", "patch", "floor-patch", "login", "storm", "overload",
)  # fmt: skip
SMALL_USERS, SMALL_TASKS = 20, 2000
LOGIN_CONNECTIONS = 4
STORM_SIDE_CONNECTIONS = 8  # JWKS and refresh, each, during the storm
# JWKS and refresh clients keep a steady pace (a pause of 50 to 150 ms between
# a connection's answer and its next request: about 75 requests/s each): their
# latency is measured at a given load, not at saturation, where it would only
# be connections / throughput.
STORM_SIDE_PAUSE_MS = 100
# /livez as the kubelet asks it during the storm, at the same pace from a couple of
# connections: a probe that times out restarts a pod that was only busy hashing.
STORM_LIVEZ_CONNECTIONS = 2
TASKS_APP = "taskstack.tasks.main:create_app"
# Alternating rounds of the loads a target compares: a few seconds of other work on
# the machine then falls on several loads, not on one (see the performance notes).
ROUNDS = 4
MAX_WARNINGS_QUOTED = 5


@dataclass(frozen=True)
class BenchOptions:
    database_url: URL | None
    duration: int
    warmup: int
    connections: int
    users: int
    tasks: int
    bcrypt_cost: int
    only: tuple[str, ...]
    overload_connections: int = overloaded.OVERLOAD_CONNECTIONS


def bench(options: BenchOptions) -> Report:
    """Run every selected scenario; the report lists the ones that saw errors."""
    wrk.require_wrk()
    report = Report(
        context=run_context(
            {
                "users": options.users,
                "tasks": options.tasks,
                "duration_seconds": options.duration,
                "warmup_seconds": options.warmup,
                "connections": options.connections,
                "bcrypt_cost": options.bcrypt_cost,
            }
        )
    )
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskstack-bench-")))
        server = stack.enter_context(postgres_server(options.database_url))
        main_db = stack.enter_context(scratch_database(server, "main"))
        _say(f"seeding {options.users:,} users and {options.tasks:,} tasks")
        started = time.monotonic()
        hashed = password_hash(pepper=PEPPER, cost=options.bcrypt_cost)
        data = seed(main_db, users=options.users, tasks=options.tasks, hashed=hashed)
        report.context["seed_seconds"] = round(time.monotonic() - started, 1)
        report.context["postgresql"] = server_version(main_db)
        report.hash_ms = micro.bcrypt_ms(hashed)
        report.token_verify_us = micro.token_verify_us()
        small_db = small = None
        if "list-2k" in options.only:
            small_db = stack.enter_context(scratch_database(server, "small"))
            small = seed(small_db, users=SMALL_USERS, tasks=SMALL_TASKS, hashed=None)

        keys = work / "keys"
        generate_signing_key(keys, development=True)
        env = service_env(options.bcrypt_cost, keys)
        floor = not fidelity.FLOORS.keys().isdisjoint(options.only)
        servers = _start_servers(stack, work, env, main_db, small_db, floor)
        tokens = Tokens(keys, issuer=ISSUER, audience=AUDIENCE)
        run = _Run(options, report, work, servers, tokens)
        run.all(data, small, main_db)
        if "overload" in options.only:
            report.overload = overloaded.run(
                overloaded.OverloadOptions(
                    options.duration, options.warmup, options.connections,
                    options.overload_connections,
                ),
                work=work, env={**env, **_db(main_db)}, data=data, tokens=tokens, say=_say,
            )  # fmt: skip
            for service, result in report.overload.items():
                if result.errors:
                    errors = ", ".join(f"{n} {kind}" for kind, n in sorted(result.errors.items()))
                    report.failures.append(f"overload-{service}: {errors}")
        for name, process in servers.items():
            report.rss_mb[name] = process.rss_bytes() / MB
        report.context["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    return report


def _start_servers(
    stack: contextlib.ExitStack,
    work: Path,
    env: dict[str, str],
    main_db: URL,
    small_db: URL | None,
    floor: bool,
) -> dict[str, Server]:
    """auth first (tasks loads its JWKS at start-up), then the others side by side."""

    def start(name: str, factory: str, extra: dict[str, str]) -> Server:
        server = launch(name, factory, {**env, **extra}, work)
        stack.callback(server.stop)
        return server

    auth = start("auth", "taskstack.auth.main:create_app", _db(main_db))
    auth.wait_ready()
    env["JWKS_URL"] = f"{auth.url}/.well-known/jwks.json"
    servers = {"auth": auth, "tasks": start("tasks", TASKS_APP, _db(main_db))}
    if small_db is not None:
        servers["tasks-2k"] = start("tasks-2k", TASKS_APP, _db(small_db))
    if floor:
        servers["floor"] = start(
            "floor", "taskstack.bench.floor:create_app", {"FLOOR_DATABASE_URL": libpq(main_db)}
        )
    for server in servers.values():
        server.wait_ready()
    return servers


class _Run:
    def __init__(
        self,
        options: BenchOptions,
        report: Report,
        work: Path,
        servers: dict[str, Server],
        tokens: Tokens,
    ):
        self.options = options
        self.report = report
        self.work = work
        self.servers = servers
        self.tokens = tokens

    def all(self, data: DataSet, small: DataSet | None, database: URL) -> None:
        """The tasks loads in alternating rounds (their ratios compare them), then auth's."""
        only, tokens = self.options.only, self.tokens
        samples = workload.sample_tasks(database, 2 * workload.MAX_REQUESTS, seed=3)
        builders: dict[str, tuple[str, str, Callable[[], list[wrk.Request]]]] = {
            "livez": ("GET /livez (tasks)", "tasks", workload.livez),
            "list": (
                "GET /v1/tasks first page",
                "tasks",
                lambda: workload.first_pages(data, tokens),
            ),
            "list-2k": (
                "GET /v1/tasks, 2,000 tasks",
                "tasks-2k",
                lambda: workload.first_pages(small or data, tokens),
            ),
            "deep": (
                "GET /v1/tasks?cursor (deep)",
                "tasks",
                lambda: workload.deep_pages(database, data, tokens, CURSOR_SECRET.encode()),
            ),
            "filtered": (
                "GET /v1/tasks?completed&tag",
                "tasks",
                lambda: workload.filtered_pages(data, tokens),
            ),
            "get": (
                "GET /v1/tasks/{id}",
                "tasks",
                lambda: workload.single_tasks(samples[::2], tokens),
            ),
            "create": ("POST /v1/tasks", "tasks", lambda: workload.creations(data, tokens)),
            "patch": (
                "PATCH /v1/tasks/{id}",
                "tasks",
                lambda: workload.patches(samples[1::2], tokens),
            ),
        }
        built: dict[str, list[wrk.Request]] = {}

        def requests(name: str) -> list[wrk.Request]:
            # Built once: a floor takes the very requests of the scenario it answers for.
            if name not in built:
                built[name] = builders[name][2]()
            return built[name]

        def on_floor(of: str) -> Callable[[], list[wrk.Request]]:
            return lambda: workload.on_floor(requests(of), tokens)

        for floor, of in fidelity.FLOORS.items():
            builders[floor] = (f"{builders[of][0]}, the floor", "floor", on_floor(of))
        loads = [
            (name, builders[name][0], builders[name][1], requests(name))
            for name in SCENARIOS
            if name in only and name in builders
        ]
        for floor, of in fidelity.FLOORS.items():
            if floor in only:
                self.check_floor(floor, requests(of), requests(floor))
        if loads:
            self.measure_together(loads, self.options.connections)
        if "login" in only:
            logins = workload.logins(data)
            self.measure("login", "POST /v1/auth/token password", "auth", logins, LOGIN_CONNECTIONS)
        if "storm" in only:
            self.storm(data)

    def check_floor(
        self, name: str, service_requests: list[wrk.Request], floor_requests: list[wrk.Request]
    ) -> None:
        """The floor must answer as the service does, or its figures mean nothing."""
        problem = fidelity.check(
            name,
            self.servers["tasks"].url,
            service_requests,
            self.servers["floor"].url,
            floor_requests,
        )
        if problem is not None:
            self.report.failures.append(problem)

    def measure(
        self, name: str, title: str, server_name: str, requests: list[wrk.Request], conns: int
    ) -> None:
        self.measure_together([(name, title, server_name, requests)], conns)

    def measure_together(
        self, loads: list[tuple[str, str, str, list[wrk.Request]]], conns: int
    ) -> None:
        """Measure loads whose figures are compared in alternating rounds, so that other work
        on the machine weighs on each alike; a single load runs in one round."""
        rounds = ROUNDS if len(loads) > 1 and self.options.duration >= 2 * ROUNDS else 1
        seconds = self.options.duration // rounds
        scripts = {}
        for name, title, server_name, requests in loads:
            scripts[name] = wrk.rotating_script(self.work / f"{name}.lua", requests)
            _say(f"{name}: {title}, {conns} connections")
            if self.options.warmup:
                warm = wrk.run(
                    self.servers[server_name].url,
                    scripts[name],
                    connections=conns,
                    seconds=self.options.warmup,
                    scenario=name,
                )
                self.check(Scenario(name, title, server_name, conns, warm, None), "warm-up")
        for server_name in {server_name for _name, _title, server_name, _requests in loads}:
            self.servers[server_name].wait_idle()
        results: dict[str, list[wrk.WrkResult]] = {name: [] for name, *_ in loads}
        cpu = dict.fromkeys(results, 0.0)
        cpu0 = dict.fromkeys(results, 0.0)
        for round_number in range(1, rounds + 1):
            if rounds > 1:
                _say(f"round {round_number} of {rounds}: {seconds} s each")
            for name, _title, server_name, _requests in loads:
                server = self.servers[server_name]
                # The scenario before on this server left its last requests in flight
                # (wrk closes its connections mid-request): they must neither count
                # here nor take places the new load's requests queue behind.
                server.wait_idle()
                before, cpu0_before = server.cpu_seconds(), cpu_busy_seconds(SERVER_CPU)
                results[name].append(
                    wrk.run(
                        server.url, scripts[name], connections=conns, seconds=seconds, scenario=name
                    )
                )
                cpu[name] += server.cpu_seconds() - before
                cpu0[name] += cpu_busy_seconds(SERVER_CPU) - cpu0_before
        for name, title, server_name, _requests in loads:
            result = wrk.combine(results[name])
            scenario = Scenario(
                name, title, server_name, conns, result, _per_request(cpu[name], result.requests)
            )
            if result.seconds:
                scenario.others_busy = max(0.0, (cpu0[name] - cpu[name]) / result.seconds)
            self.report.add(scenario)
            self.check(scenario, "run")

    def storm(self, data: DataSet) -> None:
        """JWKS, refresh and /livez clients at a steady pace, first alone and then while
        sign-ins storm at twice the usual connections: what the storm costs them, side by
        side. auth runs confined to one CPU (taskset), as in a pod limited to one."""
        auth = self.servers["auth"]
        tokens = signins.refresh_tokens(auth, data, 2 * STORM_SIDE_CONNECTIONS + 4)
        # At least 2 s: a refresh may wait behind a second of sign-ins.
        seconds = max(2, self.options.duration)
        lead = max(1, self.options.warmup)
        storm_connections = 2 * self.options.connections
        half = len(tokens) // 2
        auth.wait_idle()  # sign-ins from the scenario before may still be hashing
        _say("storm: JWKS, refresh and /livez at a steady pace, without sign-ins")
        quiet = self.side_loads(auth, tokens[:half], seconds, "quiet")
        _say(f"storm: {storm_connections} sign-in connections, JWKS, refresh, /livez alongside")
        storm = wrk.start(
            auth.url,
            wrk.rotating_script(self.work / "storm.lua", workload.logins(data)),
            connections=storm_connections,
            seconds=seconds + lead + 1,
            timeout=30,
        )
        time.sleep(lead)
        before = auth.cpu_seconds()
        side = self.side_loads(auth, tokens[half:], seconds, "storm", probe=data)
        cpu_seconds = auth.cpu_seconds() - before
        login = wrk.finish(storm, "storm-login")
        scenarios = [
            Scenario(
                "storm-login", "POST /v1/auth/token storm", "auth", storm_connections, login,
                None, SHED,
            ),
            *side, *quiet,
        ]  # fmt: skip
        total = sum(s.wrk.requests for s in scenarios if s.name.startswith("storm-"))
        self.report.context["storm_cpu_ms_per_request"] = _per_request(cpu_seconds, total)
        self.report.context["storm_side_pause_ms"] = STORM_SIDE_PAUSE_MS
        for scenario in scenarios:
            self.report.add(scenario)
        for scenario in scenarios:
            self.check(scenario, "run")

    def side_loads(
        self,
        auth: Server,
        tokens: list[str],
        seconds: int,
        phase: str,
        *,
        probe: DataSet | None = None,
    ) -> list[Scenario]:
        """JWKS, refresh and /livez clients at a steady pace, side by side (with the sign-in
        probe)."""
        scripts = {
            "jwks": wrk.rotating_script(
                self.work / f"{phase}-jwks.lua", workload.jwks(), pause_ms=STORM_SIDE_PAUSE_MS
            ),
            "refresh": wrk.refresh_script(
                self.work / f"{phase}-refresh.lua", tokens, pause_ms=STORM_SIDE_PAUSE_MS
            ),
            "livez": wrk.rotating_script(
                self.work / f"{phase}-livez.lua", workload.livez(), pause_ms=STORM_SIDE_PAUSE_MS
            ),
        }
        connections = dict.fromkeys(scripts, STORM_SIDE_CONNECTIONS) | {
            "livez": STORM_LIVEZ_CONNECTIONS
        }
        running = {
            name: wrk.start(auth.url, script, connections=connections[name], seconds=seconds)
            for name, script in scripts.items()
        }
        if probe is not None:
            self.report.probe = signins.probe(auth, probe, seconds)
        titles = {
            "jwks": "GET /.well-known/jwks.json",
            "refresh": "POST /v1/auth/token refresh",
            "livez": "GET /livez (auth)",
        }
        return [
            Scenario(
                f"{phase}-{name}",
                titles[name],
                "auth",
                connections[name],
                wrk.finish(process, f"{phase}-{name}"),
                None,
            )
            for name, process in running.items()
        ]

    def check(self, scenario: Scenario, phase: str) -> None:
        """Record an error answer or a socket error: the run fails, after every scenario ran."""
        where = f"{scenario.name}" + (f" ({phase})" if phase != "run" else "")
        if scenario.errors:
            detail = scenario.wrk.describe_errors(scenario.allowed)
            # What the server said about it: the services log each failure's cause.
            said = self.servers[scenario.server].warnings(MAX_WARNINGS_QUOTED)
            self.report.failures.append(f"{where}: {detail}" + "".join(f"\n  {w}" for w in said))
        elif scenario.wrk.requests == 0:
            self.report.failures.append(f"{where}: no request completed")


def _per_request(cpu_seconds: float, requests: int) -> float | None:
    return cpu_seconds * 1000 / requests if requests else None


def _db(url: URL) -> dict[str, str]:
    return {"DATABASE_URL": libpq(url)}


def _say(message: str) -> None:
    print(f"bench: {message}", flush=True)
