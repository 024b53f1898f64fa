"""The overload scenario: figures and targets from hand-made samples, the client, a smoke run."""

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from taskstack.bench.overload import (
    CLOSED,
    NO_RETRY_AFTER,
    TIMED_OUT,
    Client,
    Phase,
    Plan,
    Recorded,
    parse,
)
from taskstack.bench.overloaded import Samples, figures, memory_limit_mib, percentile, quantity_mib
from tests.bench.test_bench import TASKSTACK
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.support.tools import require

PHASES = [
    Phase("normal", 32, 2.0, 0.0),
    Phase("overload", 4000, 4.0, 1.0),  # ramp 1 s, steady 3 s: from 2 s to 3 s, then to 6 s
    Phase("recovery", 32, 2.0, 0.0),
]


def samples(requests: list[tuple[int, float, float, int, float]], probes: Recorded) -> Samples:
    recorded = Recorded()
    for phase, sent, latency_ms, status, retry_after in requests:
        recorded.add(phase, sent, latency_ms / 1000, status, retry_after)
    return Samples(PHASES, recorded, probes)


def steady_run(*, slow: int = 50, extra: list[Any] | None = None) -> Samples:
    """100 normal requests at 10 ms (p99 10 ms), then the overload and the recovery."""
    requests: list[tuple[int, float, float, int, float]] = [
        (0, i * 0.02, 10.0, 200, NO_RETRY_AFTER) for i in range(100)
    ]
    # The ramp: slow, and refusals that must not count in the steady window.
    requests += [(1, 2.0 + i * 0.01, 500.0, 200, NO_RETRY_AFTER) for i in range(50)]
    requests += [(1, 2.5, 900.0, 503, 1.0)] * 10
    # Steady: 120 admitted at 40 ms and one at 60 ms; 200 refused at 3 ms and 3 at 80 ms.
    requests += [(1, 3.0 + i * 0.02, 40.0, 200, NO_RETRY_AFTER) for i in range(120)]
    requests += [(1, 5.9, 60.0, 200, NO_RETRY_AFTER)]
    requests += [(1, 3.0 + i * 0.01, 3.0, 503, 2.0) for i in range(200)]
    requests += [(1, 5.5, 80.0, 503, 5.0)] * 3
    # Recovery: slow for the first ``slow`` requests (10 ms apart), then back to 10 ms.
    requests += [
        (2, 6.005 + i * 0.01, 30.0 if i < slow else 10.0, 200, NO_RETRY_AFTER) for i in range(200)
    ]
    requests += extra or []
    probes = Recorded()
    for i in range(100):
        probes.add(1, 2.0 + i * 0.04, (5.0 if i < 99 else 70.0) / 1000, 200, NO_RETRY_AFTER)
    probes.add(0, 0.5, 0.9, 200, NO_RETRY_AFTER)  # slow, but not during the overload
    return samples(requests, probes)


def test_figures_from_hand_made_samples() -> None:
    result = figures(
        "tasks", steady_run(), ramp_seconds=1.0, rss_peak_mb=180.0, memory_limit_mb=384.0
    )

    assert result.normal.goodput_rps == 100 / 2.0 and result.normal.admitted_p99_ms == 10.0
    # Steady window [3 s, 6 s): by send time, the ramp's requests left out.
    assert result.steady.goodput_rps == pytest.approx(121 / 3.0)
    assert result.steady.admitted_p99_ms == 40.0  # the 121st is past the 99th percentile
    assert result.steady.refused == 203
    assert result.steady.refused_p99_ms == 80.0  # rank 201 of 203
    assert result.steady.retry_after_max == 5
    assert (result.ramp.requests, result.ramp.refused) == (60, 10)
    assert result.ramp.admitted_p99_ms == 500.0 and result.ramp.refused_p99_ms == 900.0
    assert result.errors == {}
    assert result.livez_p99_ms == 5.0 and result.livez_failures == 0
    # The first half-second window with only 10 ms requests is [0.5 s, 1.0 s).
    assert result.recovery_s == pytest.approx(1.0)
    assert result.rss_peak_mb == 180.0


def test_targets_pass_and_miss_at_their_bounds() -> None:
    good = figures("tasks", steady_run(), ramp_seconds=1.0, rss_peak_mb=180, memory_limit_mb=384)
    met = {name.split(": ", 1)[1]: ok for name, _m, _b, ok in good.targets()}
    assert met == {
        "admitted p99 vs normal p99": True,  # 40 ms <= 5 x 10 ms
        "refusals p99": False,  # 80 ms > 50 ms
        "errors other than 503 with Retry-After": True,
        "goodput vs normal req/s": True,  # 121 in 3 s against 50/s: 81%
        "RSS peak": True,
        "/livez p99 during the overload": True,
        "recovery to 1.5 x the normal p99": True,
    }

    errors = [
        (1, 4.0, 10.0, 503, NO_RETRY_AFTER),  # a 503 without Retry-After is an error
        (1, 4.0, 10.0, 502, NO_RETRY_AFTER),
        (2, 6.1, 10000.0, TIMED_OUT, NO_RETRY_AFTER),
        (0, 1.0, 1.0, CLOSED, NO_RETRY_AFTER),
    ]
    bad = figures(
        "auth",
        steady_run(slow=200, extra=errors),
        ramp_seconds=1.0,
        rss_peak_mb=310,
        memory_limit_mb=384,
    )
    assert bad.errors == {
        "503 without Retry-After": 1,
        "HTTP 502": 1,
        "timeout": 1,
        "closed": 1,
    }
    assert bad.recovery_s is None  # never back within 1.5 x 10 ms in the 2 s
    missed = {name.split(": ", 1)[1] for name, _m, _b, ok in bad.targets() if not ok}
    assert {"errors other than 503 with Retry-After", "RSS peak"} <= missed
    assert "recovery to 1.5 x the normal p99" in missed
    # RSS: under 250 MB, but over 80% of a 256 MiB limit.
    small_limit = figures(
        "tasks", steady_run(), ramp_seconds=1.0, rss_peak_mb=210, memory_limit_mb=256
    )
    rss = [ok for name, _m, _b, ok in small_limit.targets() if name.endswith("RSS peak")]
    assert rss == [False]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0 and percentile(values, 50) == 50.0
    assert percentile([7.0], 99) == 7.0 and percentile([], 99) is None


def test_memory_limits_come_from_the_chart(tmp_path: Path) -> None:
    assert memory_limit_mib("tasks") == memory_limit_mib("auth") == 384.0
    assert quantity_mib("1Gi") == 1024 and quantity_mib("512Mi") == 512
    assert quantity_mib("268435456") == 256 and quantity_mib("1M") == pytest.approx(0.9537, 1e-3)
    broken = tmp_path / "values.yaml"
    broken.write_text("tasks: {resources: {}}\n")
    assert memory_limit_mib("tasks", broken) is None


def test_the_parser_reads_just_enough_of_an_answer() -> None:
    head = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 2\r\n"
    assert parse(head + b"\r\n{") is None
    assert parse(head + b"\r\n{}NEXT") == (503, 7.0, False, len(head) + 4)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    assert parse(chunked + b"2\r\n{}\r\n") is None
    whole = chunked + b"2\r\n{}\r\n0\r\n\r\n"
    assert parse(whole) == (200, NO_RETRY_AFTER, True, len(whole))
    with pytest.raises(ValueError, match="no status line"):
        parse(b"SSH-2.0-OpenSSH\r\n\r\n")


class _Shedding:
    """Answers 503 with Retry-After: 1 to every other request, 200 to the rest."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.count += 1
        refuse = scope["path"] != "/livez" and self.count % 2 == 0
        headers = [(b"content-type", b"application/json")]
        if refuse:
            headers.append((b"retry-after", b"1"))
        await send(
            {"type": "http.response.start", "status": 503 if refuse else 200, "headers": headers}
        )
        await send({"type": "http.response.body", "body": b"{}"})


def test_the_client_waits_retry_after_and_probes_on_new_connections() -> None:
    with serve(_Shedding()) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        plan = Plan(
            host,
            int(port),
            [f"GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n"],
            [Phase("only", 4, 2.5, 0.0)],
            probe_every=0.25,
        )

        async def go() -> Client:
            client = Client(plan)
            await client.run()
            return client

        client = asyncio.run(go())

    recorded = client.recorded
    assert set(recorded.status) == {200, 503}
    assert {
        ra for s, ra in zip(recorded.status, recorded.retry_after, strict=True) if s == 503
    } == {1.0}
    # After a 503 with Retry-After: 1, a connection waits 1 to 2 s before its next
    # request: in 2.5 s, each of the 4 is refused at most 3 times, and sends a few dozen
    # requests in all where it would send thousands without waiting.
    assert 4 <= recorded.status.count(503) <= 12
    assert len(recorded.status) < 200
    assert len(client.probes.status) == 10 and set(client.probes.status) == {200}


def test_smoke_run_of_the_overload_scenario(postgres: PostgresServer, tmp_path: Path) -> None:
    require("wrk")
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [
            TASKSTACK, "bench", "--smoke", "--only", "overload",
            "--database-url", postgres.libpq(postgres.url), "--output", str(output),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads(output.read_text())
    assert report["scenarios"] == {} and report["failures"] == []
    assert set(report["overload"]) == {"tasks", "auth"}
    for service, overload in report["overload"].items():
        assert overload["connections"] == 200, service  # --smoke's
        assert overload["normal"]["goodput_rps"] > 0, service
        assert overload["steady"]["goodput_rps"] > 0, service
        assert overload["errors"] == {}, service
        assert overload["rss_peak_mb"] > 0 and overload["memory_limit_mb"] == 384.0, service
        assert len(overload["targets"]) == 7, service
    names = {target["name"] for target in report["targets"]}
    assert "overload tasks: refusals p99" in names and "overload auth: RSS peak" in names
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["overload", "conns"] for line in lines)
    assert any(line.startswith("tasks ramp (") for line in lines)
