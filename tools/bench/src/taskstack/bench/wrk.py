"""Debian's wrk as the load generator: pinned to the load CPU, scripted in Lua, read as JSON."""

import dataclasses
import json
import resource
import shutil
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from taskstack.bench.processes import LOAD_CPU
from taskstack.dev.errors import CliError

_MARKER = "TASKSTACK_WRK "
_LUA = files("taskstack.bench") / "lua"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]  # mean, max, p50, p90, p99
    client_cpu_seconds: float | None = None  # wrk's own, when it ran alone

    @property
    def client_busy(self) -> float | None:
        """The share of its CPU wrk used: near 100%, the load generator was the limit."""
        if self.client_cpu_seconds is None or not self.seconds:
            return None
        return self.client_cpu_seconds / self.seconds

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def errors(self, allowed: frozenset[int] = frozenset()) -> int:
        """Socket errors plus answers that are neither 2xx nor in ``allowed``."""
        refused = sum(
            n for s, n in self.statuses.items() if not 200 <= s < 300 and s not in allowed
        )
        return refused + sum(self.socket_errors.values())

    def describe_errors(self, allowed: frozenset[int] = frozenset()) -> str:
        parts = [
            f"{count} x HTTP {status}"
            for status, count in sorted(self.statuses.items())
            if not 200 <= status < 300 and status not in allowed
        ]
        parts += [f"{count} socket {kind}" for kind, count in self.socket_errors.items() if count]
        return ", ".join(parts)


def combine(results: Sequence[WrkResult]) -> WrkResult:
    """Several runs of one load as one: counts added; p50 the median, p90/p99/max the worst."""
    if len(results) == 1:
        return results[0]
    requests = sum(r.requests for r in results)
    statuses: dict[int, int] = {}
    socket_errors: dict[str, int] = {}
    for r in results:
        for status, count in r.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
        for kind, count in r.socket_errors.items():
            socket_errors[kind] = socket_errors.get(kind, 0) + count
    latency = {
        "mean": sum(r.latency_ms["mean"] * r.requests for r in results) / max(requests, 1),
        "p50": statistics.median(r.latency_ms["p50"] for r in results),
        **{k: max(r.latency_ms[k] for r in results) for k in ("p90", "p99", "max")},
    }
    cpu = [r.client_cpu_seconds for r in results]
    return WrkResult(
        requests,
        sum(r.seconds for r in results),
        statuses,
        socket_errors,
        latency,
        None if None in cpu else sum(c for c in cpu if c is not None),
    )


def require_wrk() -> None:
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise CliError(f"{tool} is not installed (Debian: apt-get install wrk util-linux)")


def lua_literal(value: object) -> str:
    """``value`` (str, int, None, list, dict) as a Lua expression."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = "".join(
            f"\\{b:03d}" if b in b'"\\' or not 32 <= b < 127 else chr(b) for b in value.encode()
        )
        return f'"{escaped}"'
    if isinstance(value, Mapping):
        items = ",".join(f"[{lua_literal(k)}]={lua_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, Sequence):
        return "{" + ",".join(lua_literal(v) for v in value) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def rotating_script(path: Path, requests: Sequence[Request], *, pause_ms: int = 0) -> Path:
    """A script that cycles through ``requests``, one per call, pre-formatted."""
    data = [[r.method, r.path, dict(r.headers), r.body] for r in requests]
    return _script(path, f"REQUESTS = {lua_literal(data)}\n", "rotate.lua", pause_ms)


def refresh_script(path: Path, refresh_tokens: Sequence[str], *, pause_ms: int = 0) -> Path:
    """A script that refreshes tokens, each answer's new refresh token used next."""
    data = f"REFRESH_TOKENS = {lua_literal(list(refresh_tokens))}\n"
    return _script(path, data, "refresh.lua", pause_ms)


def _script(path: Path, data: str, body: str, pause_ms: int) -> Path:
    """The script: its data, the JSON report, its body. With ``pause_ms``, each connection
    waits between an answer and its next request (wrk's delay(), which its latency figures
    leave out), from half to one and a half times that, at random so that connections do
    not fall into step: clients at a steady pace rather than ones that saturate."""
    parts = [data, (_LUA / "report.lua").read_text(), (_LUA / body).read_text()]
    if pause_ms:
        low, high = pause_ms // 2, pause_ms * 3 // 2
        parts.append(f"function delay() return math.random({low}, {high}) end\n")
    path.write_text("\n".join(parts))
    return path


def start(
    url: str, script: Path, *, connections: int, seconds: int, timeout: int = 10
) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - fixed tools, our own arguments
        [  # noqa: S607 - Debian's wrk and taskset from PATH
            "taskset",
            "-c",
            str(LOAD_CPU),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={timeout}s",
            "-s",
            str(script),
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], scenario: str) -> WrkResult:
    output, _ = process.communicate()
    line = next((x for x in output.splitlines() if x.startswith(_MARKER)), None)
    if process.returncode != 0 or line is None:
        raise CliError(f"wrk failed in scenario {scenario}: {output.strip()[-500:]}")
    raw = json.loads(line.removeprefix(_MARKER))
    return WrkResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        statuses={int(status): count for status, count in raw["statuses"].items()},
        socket_errors=raw["socket_errors"],
        latency_ms={name: value / 1000 for name, value in raw["latency_us"].items()},
    )


def run(url: str, script: Path, *, connections: int, seconds: int, scenario: str) -> WrkResult:
    """One wrk run on its own, its CPU time included (it is the only child reaped meanwhile)."""
    before = _children_cpu()
    result = finish(start(url, script, connections=connections, seconds=seconds), scenario)
    return dataclasses.replace(result, client_cpu_seconds=_children_cpu() - before)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
