"""The benchmark's results: the printed table, the targets, the JSON file."""

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskstack.bench.fidelity import FLOORS
from taskstack.bench.overloaded import Overload, table_lines
from taskstack.bench.processes import SERVER_CPU
from taskstack.bench.table import aligned
from taskstack.bench.wrk import WrkResult

MB = 1024 * 1024
RSS_LIMIT_MB = 150
LIVEZ = "livez"
# Each service scenario and the floor that runs its requests (floor.py).
FLOOR_OF = {service: floor for floor, service in FLOORS.items()}


@dataclass
class Scenario:
    name: str
    title: str
    server: str
    connections: int
    wrk: WrkResult
    cpu_ms_per_request: float | None
    allowed: frozenset[int] = frozenset()
    # The share of the server's CPU that other processes took meanwhile (PostgreSQL,
    # anything else running on the machine): what the server could not have.
    others_busy: float | None = None

    @property
    def errors(self) -> int:
        return self.wrk.errors(self.allowed)

    @property
    def cpu_busy(self) -> float | None:
        """The share of its CPU the server used: below 100%, it waited on something else."""
        if self.cpu_ms_per_request is None:
            return None
        return self.wrk.rps * self.cpu_ms_per_request / 1000


@dataclass
class Probe:
    """Sign-ins sent one at a time during the login storm: how the excess ones are answered."""

    statuses: dict[int, int]
    shed_latencies_ms: list[float]

    def shed_p99_ms(self) -> float | None:
        if not self.shed_latencies_ms:
            return None
        if len(self.shed_latencies_ms) == 1:
            return self.shed_latencies_ms[0]
        return statistics.quantiles(self.shed_latencies_ms, n=100, method="inclusive")[98]


@dataclass
class Target:
    name: str
    measured: str
    bound: str
    met: bool


@dataclass
class Report:
    context: dict[str, Any]
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    hash_ms: float | None = None
    token_verify_us: dict[str, float] = field(default_factory=dict)
    probe: Probe | None = None
    failures: list[str] = field(default_factory=list)
    overload: dict[str, Overload] = field(default_factory=dict)

    def add(self, scenario: Scenario) -> None:
        self.scenarios[scenario.name] = scenario

    def ratio(self, name: str, base: str) -> float | None:
        """``name``'s requests/s over ``base``'s; None for auth's scenarios, which the
        tasks service's floors do not measure."""
        if name not in self.scenarios or base not in self.scenarios:
            return None
        if self.scenarios[name].server == "auth":
            return None
        base_rps = self.scenarios[base].wrk.rps
        return self.scenarios[name].wrk.rps / base_rps if base_rps else None

    def vs_floor(self, name: str) -> float | None:
        """A service scenario's requests/s over its floor's."""
        return self.ratio(name, FLOOR_OF[name]) if name in FLOOR_OF else None

    def targets(self) -> list[Target]:
        targets: list[Target] = []

        def ratio_target(label: str, name: str, base: str, minimum: float) -> None:
            value = self.ratio(name, base)
            if value is not None:
                targets.append(Target(label, f"{value:.0%}", f">= {minimum:.0%}", value >= minimum))

        def latency_target(label: str, name: str, limit_ms: float) -> None:
            if name in self.scenarios:
                p99 = self.scenarios[name].wrk.latency_ms["p99"]
                targets.append(Target(label, f"{p99:.1f} ms", f"< {limit_ms:g} ms", p99 < limit_ms))

        ratio_target("list first page vs floor-list", "list", "floor-list", 0.60)
        if "list" in self.scenarios:
            listed = self.scenarios["list"]
            p99 = listed.wrk.latency_ms["p99"]
            targets.append(
                Target(
                    "list first page p99",
                    f"{p99:.1f} ms at {listed.connections} connections",
                    "<= 40 ms at 32 connections",
                    p99 <= 40,
                )
            )
        ratio_target("get one task vs floor-get", "get", "floor-get", 0.60)
        ratio_target("create vs floor-create", "create", "floor-create", 0.50)
        ratio_target("patch vs floor-patch", "patch", "floor-patch", 0.50)
        ratio_target("first page, 200,000 tasks vs 2,000", "list", "list-2k", 0.85)
        ratio_target("deep page vs first page", "deep", "list", 0.85)
        if "login" in self.scenarios and self.hash_ms is not None:
            cores = self.scenarios["login"].wrk.rps * self.hash_ms / 1000
            targets.append(
                Target(
                    "login req/s x bcrypt time (1 core)",
                    f"{cores:.2f} cores",
                    ">= 0.80",
                    cores >= 0.8,
                )
            )
        latency_target("JWKS p99 during the login storm", "storm-jwks", 50)
        latency_target("refresh p99 during the login storm", "storm-refresh", 50)
        # The kubelet's liveness probe times out after probes.liveness.timeoutSeconds (3 s);
        # 100 ms keeps a wide margin on a one-CPU auth in the middle of the storm.
        latency_target("/livez p99 during the login storm (auth on 1 CPU)", "storm-livez", 100)
        if self.probe is not None:
            shed = self.probe.shed_p99_ms()
            targets.append(
                Target(
                    "excess logins answered 503/429 fast (probe p99)",
                    "none shed" if shed is None else f"{shed:.1f} ms",
                    "< 100 ms",
                    shed is not None and shed < 100,
                )
            )
        if self.scenarios:
            errors = sum(s.errors for s in self.scenarios.values())
            targets.append(Target("errors, every scenario", str(errors), "= 0", errors == 0))
        for overload in self.overload.values():
            targets.extend(Target(*target) for target in overload.targets())
        for service in ("auth", "tasks"):
            if service in self.rss_mb:
                rss = self.rss_mb[service]
                targets.append(
                    Target(
                        f"{service} RSS after the run",
                        f"{rss:.0f} MB",
                        f"< {RSS_LIMIT_MB} MB",
                        rss < RSS_LIMIT_MB,
                    )
                )
        return targets

    def table(self) -> str:
        header = (
            "scenario", "conns", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms/req",
            "CPU busy", "others", "vs livez", "vs floor",
        )  # fmt: skip
        rows = [header]
        for s in self.scenarios.values():
            rows.append(
                (
                    s.name,
                    str(s.connections),
                    f"{s.wrk.rps:,.0f}" if s.wrk.rps >= 100 else f"{s.wrk.rps:.1f}",
                    f"{s.wrk.latency_ms['p50']:.1f}",
                    f"{s.wrk.latency_ms['p99']:.1f}",
                    str(s.errors) + (f" ({_shed(s)} shed)" if s.allowed else ""),
                    "-" if s.cpu_ms_per_request is None else f"{s.cpu_ms_per_request:.2f}",
                    _percent(s.cpu_busy),
                    _percent(s.others_busy),
                    _percent(self.ratio(s.name, LIVEZ)),
                    _percent(self.vs_floor(s.name)),
                )
            )
        lines = [*self.heading(), "", *aligned(rows)]
        lines.append(
            f"CPU busy: the server's share of CPU {SERVER_CPU}; others: what other processes "
            f"(PostgreSQL, the rest of the machine) took of CPU {SERVER_CPU} meanwhile"
        )
        lines.append("")
        lines.append(
            "RSS after the run: " + ", ".join(f"{k} {v:.0f} MB" for k, v in self.rss_mb.items())
        )
        busiest = max(
            (s for s in self.scenarios.values() if s.wrk.client_busy is not None),
            key=lambda s: s.wrk.client_busy or 0.0,
            default=None,
        )
        if busiest is not None:
            lines.append(
                f"wrk's own CPU, highest: {busiest.wrk.client_busy:.0%} of CPU 1 ({busiest.name})"
            )
        if self.hash_ms is not None:
            lines.append(f"bcrypt verify at the configured cost: {self.hash_ms:.0f} ms")
        if self.token_verify_us:
            figures = ", ".join(f"{a} {us:.0f} µs" for a, us in self.token_verify_us.items())
            lines.append(f"access-token verification (PyJWT): {figures}")
        if self.probe is not None:
            counts = ", ".join(f"{n} x {s}" for s, n in sorted(self.probe.statuses.items()))
            lines.append(f"sign-in probe during the storm: {counts or 'no answers'}")
        if self.overload:
            lines.extend(["", *table_lines(self.overload)])
        lines.append("")
        lines.append("targets:")
        for t in self.targets():
            lines.append(f"  {'PASS' if t.met else 'MISS'}  {t.name}: {t.measured} ({t.bound})")
        floors = [
            f"{floor} {ratio:.0%}"
            for floor in FLOORS
            if (ratio := self.ratio(floor, LIVEZ)) is not None
        ]
        if floors:
            lines.append(f"floors vs /livez, for reference: {', '.join(floors)}")
        return "\n".join(lines)

    def heading(self) -> list[str]:
        """When, where and how the figures were taken (docs/performance.md quotes them)."""
        context, machine, settings = self.context, self.context["machine"], self.context["settings"]
        return [
            f"taskstack bench, {context['date']}",
            f"machine: {machine['cpu']}, {machine['cores']} CPUs, Linux {machine['kernel']}, "
            f"Python {machine['python']}, PostgreSQL {context.get('postgresql', '?')}",
            f"data: {settings['users']:,} users, {settings['tasks']:,} tasks; "
            f"{settings['duration_seconds']} s per scenario after {settings['warmup_seconds']} s "
            f"of warm-up; servers on CPU {settings['server_cpu']}, wrk on CPU "
            f"{settings['load_cpu']}",
            f"1-minute load average: {machine['load_average_start']} before the run, "
            f"{machine.get('load_average_end', '?')} after",
            f"services: LOG_LEVEL={settings['log_level']}, ACCESS_LOG=false, "
            f"tracing {settings['tracing']}, bcrypt cost {settings['bcrypt_cost']}, "
            f"DATABASE_POOL_SIZE=10",
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            **self.context,
            "failures": self.failures,
            "hash_ms": self.hash_ms,
            "token_verify_us": self.token_verify_us,
            "rss_mb": self.rss_mb,
            "scenarios": {
                s.name: {
                    "title": s.title,
                    "server": s.server,
                    "connections": s.connections,
                    "requests": s.wrk.requests,
                    "seconds": s.wrk.seconds,
                    "requests_per_second": s.wrk.rps,
                    "latency_ms": s.wrk.latency_ms,
                    "statuses": {str(k): v for k, v in sorted(s.wrk.statuses.items())},
                    "socket_errors": s.wrk.socket_errors,
                    "errors": s.errors,
                    "shed": _shed(s),
                    "cpu_ms_per_request": s.cpu_ms_per_request,
                    "cpu_busy": s.cpu_busy,
                    "wrk_busy": s.wrk.client_busy,
                    "others_busy": s.others_busy,
                    "vs_livez": self.ratio(s.name, LIVEZ),
                    "floor": FLOOR_OF.get(s.name),
                    "vs_floor": self.vs_floor(s.name),
                }
                for s in self.scenarios.values()
            },
            "probe": None
            if self.probe is None
            else {
                "statuses": {str(k): v for k, v in sorted(self.probe.statuses.items())},
                "shed_p99_ms": self.probe.shed_p99_ms(),
            },
            "overload": {name: o.as_json() for name, o in self.overload.items()},
            "targets": [t.__dict__ for t in self.targets()],
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")


def _shed(s: Scenario) -> int:
    return sum(n for status, n in s.wrk.statuses.items() if status in s.allowed)


def _percent(value: float | None, fmt: Callable[[float], str] = "{:.0%}".format) -> str:
    return "-" if value is None else fmt(value)
