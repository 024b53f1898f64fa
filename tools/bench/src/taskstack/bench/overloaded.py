"""The overload scenario: one worker under thousands of connections, between two loads it can serve.

Per service (tasks: the first page of GET /v1/tasks; auth: GET /v1/auth/me), a
server of its own (so that its memory peak is the scenario's, and the other
scenarios' servers are not left swollen) is loaded by ``overload``'s client in
three phases, back to back:

- normal: the usual connections (32) for the run's duration;
- overload: thousands of connections (4,000), arriving over the first second;
  the first seconds are the ramp, reported apart, and the rest is the steady
  window, where each request counts by the time it was sent;
- recovery: the usual connections again, once the overload's are gone.

A probe opens a new connection for GET /livez every 50 ms all along. The
figures and the targets are in ``Overload``; ``figures`` computes them from the
samples alone, so that tests can check them on samples made by hand.
"""

import contextlib
import json
import re
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from taskstack.bench.overload import (
    ERRORS,
    NO_RETRY_AFTER,
    Phase,
    Plan,
    Recorded,
)
from taskstack.bench.processes import HOST, LOAD_CPU, Server, launch
from taskstack.bench.seed import DataSet
from taskstack.bench.table import aligned
from taskstack.bench.workload import MAX_REQUESTS, Tokens
from taskstack.dev.errors import CliError

MIB = 1024 * 1024
OVERLOAD_CONNECTIONS = 4000
RAMP_SECONDS = 3.0
ARRIVAL_SECONDS = 1.0
RECOVERY_SECONDS = 4.0
# The rolling p99 of the recovery phase: over the requests sent in the last
# half second, moved on by a tenth.
RECOVERY_WINDOW = 0.5
RECOVERY_STEP = 0.1
CLIENT_GRACE_SECONDS = 60.0

ADMITTED_P99_FACTOR = 5.0
REFUSAL_P99_MS = 50.0
GOODPUT_SHARE = 0.8
RSS_BOUND_MB = 250.0
RSS_LIMIT_SHARE = 0.8
LIVEZ_P99_MS = 50.0
RECOVERY_FACTOR = 1.5
RECOVERY_BOUND_S = 2.0

VALUES = Path(__file__).resolve().parents[5] / "deploy" / "helm" / "taskstack" / "values.yaml"


@dataclass(frozen=True)
class Service:
    title: str
    factory: str
    path: str


SERVICES = {
    "tasks": Service("GET /v1/tasks first page", "taskstack.tasks.main:create_app", "/v1/tasks"),
    "auth": Service("GET /v1/auth/me", "taskstack.auth.main:create_app", "/v1/auth/me"),
}


@dataclass
class Samples:
    """What the client recorded: the phases, then one entry per request and per probe."""

    phases: list[Phase]
    requests: Recorded
    probes: Recorded
    client_cpu_seconds: float | None = None  # the client process's own, user and system

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Samples":
        return cls(
            [Phase(**phase) for phase in raw["phases"]],
            Recorded(**raw["requests"]),
            Recorded(**raw["probes"]),
        )


@dataclass
class Window:
    """The figures of the requests sent within one stretch of time."""

    seconds: float
    requests: int = 0
    goodput_rps: float = 0.0  # 2xx per second
    admitted_p99_ms: float | None = None
    refused: int = 0  # 503 with Retry-After
    refused_p99_ms: float | None = None
    retry_after_max: int | None = None


@dataclass
class Overload:
    service: str
    title: str
    connections: int
    normal_connections: int
    normal: Window
    ramp: Window
    steady: Window
    errors: dict[str, int]  # what was neither 2xx nor 503 with Retry-After, whole run
    livez_p99_ms: float | None  # during the overload phase
    livez_failures: int  # probes of the overload phase that did not answer 200
    recovery_s: float | None  # None: the rolling p99 never came back
    recovery_seconds: float
    rss_peak_mb: float | None = None
    memory_limit_mb: float | None = None
    client_busy: float | None = None  # the share of the load CPU the client used
    notes: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def targets(self) -> list[tuple[str, str, str, bool]]:
        """(name, measured, bound, met) for each overload target."""
        name = f"overload {self.service}"
        normal_p99 = self.normal.admitted_p99_ms
        targets = []
        admitted, refused = self.steady.admitted_p99_ms, self.steady.refused_p99_ms
        if normal_p99 is not None:
            bound = ADMITTED_P99_FACTOR * normal_p99
            targets.append(
                (
                    f"{name}: admitted p99 vs normal p99",
                    _ms(admitted),
                    f"<= {ADMITTED_P99_FACTOR:g} x {normal_p99:.1f} ms",
                    admitted is not None and admitted <= bound,
                )
            )
        targets.append(
            (
                f"{name}: refusals p99",
                "none refused" if refused is None else f"{refused:.1f} ms",
                f"<= {REFUSAL_P99_MS:g} ms",
                refused is not None and refused <= REFUSAL_P99_MS,
            )
        )
        targets.append(
            (
                f"{name}: errors other than 503 with Retry-After",
                _describe(self.errors) or "0",
                "0",
                self.error_count == 0,
            )
        )
        share = self.steady.goodput_rps / self.normal.goodput_rps if self.normal.goodput_rps else 0
        targets.append(
            (
                f"{name}: goodput vs normal req/s",
                f"{share:.0%}",
                f">= {GOODPUT_SHARE:.0%}",
                share >= GOODPUT_SHARE,
            )
        )
        rss_bound = RSS_BOUND_MB
        bound_text = f"< {RSS_BOUND_MB:g} MB"
        if self.memory_limit_mb is not None:
            rss_bound = min(rss_bound, RSS_LIMIT_SHARE * self.memory_limit_mb)
            bound_text += f" and < {RSS_LIMIT_SHARE:.0%} of {self.memory_limit_mb:g} MiB"
        targets.append(
            (
                f"{name}: RSS peak",
                _mb(self.rss_peak_mb),
                bound_text,
                self.rss_peak_mb is not None and self.rss_peak_mb < rss_bound,
            )
        )
        livez = self.livez_p99_ms
        targets.append(
            (
                f"{name}: /livez p99 during the overload",
                _ms(livez) + (f", {self.livez_failures} not 200" if self.livez_failures else ""),
                f"< {LIVEZ_P99_MS:g} ms, all 200",
                livez is not None and livez < LIVEZ_P99_MS and self.livez_failures == 0,
            )
        )
        targets.append(
            (
                f"{name}: recovery to {RECOVERY_FACTOR:g} x the normal p99",
                "never" if self.recovery_s is None else f"{self.recovery_s:.1f} s",
                f"<= {RECOVERY_BOUND_S:g} s",
                self.recovery_s is not None and self.recovery_s <= RECOVERY_BOUND_S,
            )
        )
        return targets

    def row(self) -> tuple[str, ...]:
        share = self.steady.goodput_rps / self.normal.goodput_rps if self.normal.goodput_rps else 0
        return (
            self.service,
            f"{self.connections:,}",
            f"{self.normal.goodput_rps:,.0f}",
            _ms(self.normal.admitted_p99_ms, unit=False),
            f"{self.steady.goodput_rps:,.0f} ({share:.0%})",
            _ms(self.steady.admitted_p99_ms, unit=False),
            f"{self.steady.refused:,}",
            _ms(self.steady.refused_p99_ms, unit=False),
            str(self.error_count),
            _ms(self.livez_p99_ms, unit=False),
            _mb(self.rss_peak_mb),
            "never" if self.recovery_s is None else f"{self.recovery_s:.1f} s",
        )

    def ramp_line(self) -> str:
        ramp = self.ramp
        return (
            f"{self.service} ramp ({ramp.seconds:g} s, excluded above): {ramp.requests:,} "
            f"requests, {ramp.goodput_rps:,.0f} 2xx/s, admitted p99 {_ms(ramp.admitted_p99_ms)}, "
            f"{ramp.refused:,} refused (p99 {_ms(ramp.refused_p99_ms)}); Retry-After up to "
            f"{self.steady.retry_after_max or ramp.retry_after_max or '-'} s; the client's "
            f"own CPU: {'-' if self.client_busy is None else f'{self.client_busy:.0%}'} of CPU "
            f"{LOAD_CPU}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "connections": self.connections,
            "normal_connections": self.normal_connections,
            "normal": self.normal.__dict__,
            "ramp": self.ramp.__dict__,
            "steady": self.steady.__dict__,
            "errors": self.errors,
            "livez_p99_ms": self.livez_p99_ms,
            "livez_failures": self.livez_failures,
            "recovery_s": self.recovery_s,
            "recovery_seconds": self.recovery_seconds,
            "rss_peak_mb": self.rss_peak_mb,
            "memory_limit_mb": self.memory_limit_mb,
            "client_busy": self.client_busy,
            "targets": [
                {"name": n, "measured": m, "bound": b, "met": met}
                for n, m, b, met in self.targets()
            ],
        }


TABLE_HEADER = (
    "overload", "conns", "normal req/s", "normal p99", "goodput 2xx/s", "admitted p99",
    "refused", "refused p99", "errors", "/livez p99", "RSS peak", "recovery",
)  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0-100) of ``values``; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[min(int(rank), len(ordered)) - 1]


def classify(status: int, retry_after: float) -> str:
    """'ok' (2xx), 'refused' (503 with Retry-After) or the kind of error."""
    if 200 <= status < 300:
        return "ok"
    if status == 503:
        return "refused" if retry_after != NO_RETRY_AFTER else "503 without Retry-After"
    if status < 0:
        return ERRORS.get(status, f"client error {status}")
    return f"HTTP {status}"


def window(requests: Recorded, phase: int, start: float, end: float) -> Window:
    """The figures of ``phase``'s requests sent in [start, end)."""
    ok, refused, retry_afters = [], [], []
    count = 0
    for i, sent in enumerate(requests.sent):
        if requests.phase[i] != phase or not start <= sent < end:
            continue
        count += 1
        kind = classify(requests.status[i], requests.retry_after[i])
        if kind == "ok":
            ok.append(requests.latency[i] * 1000)
        elif kind == "refused":
            refused.append(requests.latency[i] * 1000)
            retry_afters.append(int(requests.retry_after[i]))
    seconds = end - start
    return Window(
        seconds=seconds,
        requests=count,
        goodput_rps=len(ok) / seconds if seconds > 0 else 0.0,
        admitted_p99_ms=percentile(ok, 99),
        refused=len(refused),
        refused_p99_ms=percentile(refused, 99),
        retry_after_max=max(retry_afters, default=None),
    )


def recovery(
    requests: Recorded, phase: int, start: float, seconds: float, p99_bound_ms: float
) -> float | None:
    """Seconds from ``start`` until the rolling p99 of ``phase``'s requests (sent in the last
    RECOVERY_WINDOW) is within ``p99_bound_ms`` with every one of them a 2xx; None: never."""
    sent = [
        (requests.sent[i] - start, requests.latency[i] * 1000, requests.status[i])
        for i in range(len(requests.sent))
        if requests.phase[i] == phase
    ]
    steps = round((seconds - RECOVERY_WINDOW) / RECOVERY_STEP)
    for step in range(steps + 1):
        end = RECOVERY_WINDOW + step * RECOVERY_STEP
        inside = [(lat, status) for t, lat, status in sent if end - RECOVERY_WINDOW <= t < end]
        if not inside or any(not 200 <= status < 300 for _lat, status in inside):
            continue
        p99 = percentile([lat for lat, _status in inside], 99)
        if p99 is not None and p99 <= p99_bound_ms:
            return round(end, 3)
    return None


def figures(
    service: str,
    samples: Samples,
    *,
    ramp_seconds: float,
    rss_peak_mb: float | None = None,
    memory_limit_mb: float | None = None,
) -> Overload:
    """The overload figures from the samples of a normal, an overload and a recovery phase."""
    normal, overload, recovered = samples.phases
    requests = samples.requests
    overload_start = normal.seconds
    steady_start = overload_start + ramp_seconds
    overload_end = overload_start + overload.seconds
    normal_window = window(requests, 0, 0.0, normal.seconds)
    errors: dict[str, int] = {}
    for status, retry_after in zip(requests.status, requests.retry_after, strict=True):
        kind = classify(status, retry_after)
        if kind not in ("ok", "refused"):
            errors[kind] = errors.get(kind, 0) + 1
    probes = samples.probes
    livez = [
        probes.latency[i] * 1000
        for i in range(len(probes.sent))
        if probes.phase[i] == 1 and probes.status[i] == 200
    ]
    livez_failures = sum(
        1 for i in range(len(probes.sent)) if probes.phase[i] == 1 and probes.status[i] != 200
    )
    normal_p99 = normal_window.admitted_p99_ms
    total = sum(phase.seconds for phase in samples.phases)
    cpu = samples.client_cpu_seconds
    return Overload(
        service=service,
        title=SERVICES[service].title if service in SERVICES else service,
        connections=overload.connections,
        normal_connections=normal.connections,
        normal=normal_window,
        ramp=window(requests, 1, overload_start, steady_start),
        steady=window(requests, 1, steady_start, overload_end),
        errors=errors,
        livez_p99_ms=percentile(livez, 99),
        livez_failures=livez_failures,
        recovery_s=None
        if normal_p99 is None
        else recovery(requests, 2, overload_end, recovered.seconds, RECOVERY_FACTOR * normal_p99),
        recovery_seconds=recovered.seconds,
        rss_peak_mb=rss_peak_mb,
        memory_limit_mb=memory_limit_mb,
        client_busy=None if cpu is None or not total else cpu / total,
    )


def memory_limit_mib(service: str, values: Path = VALUES) -> float | None:
    """The chart's memory limit of ``service``'s container, in MiB (None: not found)."""
    with contextlib.suppress(OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        chart = yaml.safe_load(values.read_text())
        return quantity_mib(str(chart[service]["resources"]["limits"]["memory"]))
    return None


_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / MIB, "M": 1e6 / MIB, "G": 1e9 / MIB}


def quantity_mib(quantity: str) -> float:
    """A Kubernetes memory quantity (384Mi, 1Gi, 500M, 268435456) in MiB."""
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|K|M|G)?", quantity.strip())
    if not match:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    number = float(match[1])
    return number * _UNITS[match[2]] if match[2] else number / MIB


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def raise_open_files(pid: int) -> None:
    """The server may hold a socket per connection: up to its hard limit of open files."""
    with contextlib.suppress(OSError, ValueError):
        _soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))


def http_requests(service: str, data: DataSet, tokens: Tokens, port: int) -> list[str]:
    """Whole GET requests for the service's path, each with a seeded user's access token."""
    path = SERVICES[service].path
    return [
        f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: application/json\r\n"
        f"Authorization: {tokens.headers(user.id)['Authorization']}\r\n\r\n"
        for user in data.users[:MAX_REQUESTS]
    ]


def run_client(plan: Plan, work: Path, name: str) -> Samples:
    """Run the client in a process of its own on the load CPU; its samples."""
    plan_path, output = work / f"{name}-plan.json", work / f"{name}-samples.json"
    plan.dump(plan_path)
    seconds = sum(phase.seconds for phase in plan.phases)
    command = ["taskset", "-c", str(LOAD_CPU), sys.executable, "-m", "taskstack.bench.overload"]
    before = _children_cpu()
    try:
        result = subprocess.run(  # noqa: S603 - our own interpreter and module
            [*command, str(plan_path), str(output)],
            capture_output=True,
            text=True,
            timeout=seconds + CLIENT_GRACE_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CliError(f"the overload client did not finish ({name})") from exc
    if result.returncode != 0:
        raise CliError(f"the overload client failed ({name}): {result.stderr.strip()[-800:]}")
    samples = Samples.from_json(json.loads(output.read_text()))
    samples.client_cpu_seconds = _children_cpu() - before  # the only child reaped meanwhile
    return samples


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class OverloadOptions:
    duration: float  # normal phase, and the overload's steady window
    warmup: float
    connections: int  # normal and recovery
    overload_connections: int = OVERLOAD_CONNECTIONS


def run_service(
    service: str,
    options: OverloadOptions,
    *,
    work: Path,
    env: dict[str, str],
    data: DataSet,
    tokens: Tokens,
    say: Callable[[str], None] = print,
) -> Overload:
    """Start a server for ``service``, put it through the three phases, stop it."""
    spec = SERVICES[service]
    ramp = min(RAMP_SECONDS, max(1.0, options.duration))
    recovery_seconds = min(RECOVERY_SECONDS, max(2.0, options.duration / 2))
    server: Server = launch(f"overload-{service}", spec.factory, env, work)
    try:
        server.wait_ready()
        raise_open_files(server.process.pid)
        requests = http_requests(service, data, tokens, server.port)
        if options.warmup:
            warm = [Phase("warm-up", options.connections, options.warmup, 0.0)]
            run_client(Plan(HOST, server.port, requests, warm), work, f"overload-{service}-warm")
            server.wait_idle()
        phases = [
            Phase("normal", options.connections, options.duration, 0.0),
            Phase(
                "overload",
                options.overload_connections,
                ramp + options.duration,
                min(ARRIVAL_SECONDS, ramp),
            ),
            Phase("recovery", options.connections, recovery_seconds, 0.0),
        ]
        say(
            f"overload-{service}: {spec.title}, {options.connections} connections for "
            f"{options.duration:g} s, {options.overload_connections:,} for {ramp:g} + "
            f"{options.duration:g} s, {options.connections} for {recovery_seconds:g} s"
        )
        samples = run_client(Plan(HOST, server.port, requests, phases), work, f"overload-{service}")
        rss = peak_rss_mib(server.process.pid)
        alive = server.process.poll() is None
    finally:
        server.stop()
    result = figures(
        service,
        samples,
        ramp_seconds=ramp,
        rss_peak_mb=rss,
        memory_limit_mb=memory_limit_mib(service),
    )
    if not alive:
        result.notes.append(f"the {service} server exited during the run")
    return result


def run(
    options: OverloadOptions,
    *,
    work: Path,
    env: dict[str, str],
    data: DataSet,
    tokens: Tokens,
    say: Callable[[str], None] = print,
) -> dict[str, Overload]:
    """The scenario for each service in turn: tasks, then auth."""
    return {
        service: run_service(
            service, options, work=work, env=env, data=data, tokens=tokens, say=say
        )
        for service in SERVICES
    }


def table_lines(results: dict[str, Overload]) -> list[str]:
    """The overload section of the printed report."""
    if not results:
        return []
    lines = aligned([TABLE_HEADER, *(r.row() for r in results.values())])
    first = next(iter(results.values()))
    lines.append(
        f"overload: one worker; normal and recovery at {first.normal_connections} connections, "
        f"overload at {first.connections:,} (ramp {first.ramp.seconds:g} s excluded, steady "
        f"{first.steady.seconds:g} s by send time); latencies in ms; errors: neither 2xx nor "
        "503 with Retry-After"
    )
    for result in results.values():
        lines.append(result.ramp_line())
        if result.errors:
            lines.append(f"{result.service} errors: {_describe(result.errors)}")
        lines.extend(f"{result.service}: {note}" for note in result.notes)
    return lines


def _describe(errors: dict[str, int]) -> str:
    return ", ".join(f"{count} {kind}" for kind, count in sorted(errors.items()))


def _ms(value: float | None, *, unit: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if unit else f"{value:.1f}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"
