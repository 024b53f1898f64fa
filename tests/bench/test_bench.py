"""`taskstack bench`: every scenario runs end to end, error-free, and the raw floor is faithful."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

from taskstack.bench import wrk
from taskstack.bench.floor import RawFloor
from taskstack.bench.runner import SCENARIOS
from taskstack.bench.seed import seed
from taskstack.bench.wrk import Request
from taskstack.tasks.main import create_app
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.support.tokens import TokenMint
from tests.support.tools import require
from tests.tasks.conftest import jwks_app, tasks_settings

TASKSTACK = str(Path(sys.executable).with_name("taskstack"))
STORM = ("storm-login", "storm-jwks", "storm-refresh", "quiet-jwks", "quiet-refresh")


def test_smoke_run_measures_every_scenario_without_errors(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    require("wrk")
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [
            TASKSTACK,
            "bench",
            "--smoke",
            "--database-url",
            postgres.libpq(postgres.url),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads(output.read_text())
    expected = [name for name in SCENARIOS if name not in ("storm", "overload")] + list(STORM)
    assert list(report["scenarios"]) == expected
    assert set(report["overload"]) == {"tasks", "auth"}  # its figures: test_overloaded.py
    for name, scenario in report["scenarios"].items():
        assert scenario["requests"] > 0, name
        assert scenario["errors"] == 0, (name, scenario["statuses"])
        assert scenario["latency_ms"]["p99"] >= scenario["latency_ms"]["p50"] > 0, name
    assert report["failures"] == []
    assert report["scenarios"]["list"]["vs_livez"] > 0
    assert report["scenarios"]["list"]["vs_raw_floor"] > 0
    assert set(report["rss_mb"]) == {"auth", "tasks", "tasks-2k", "floor"}
    assert {target["name"] for target in report["targets"]} >= {
        "list first page vs /livez",
        "first page, 200,000 tasks vs 2,000",
        "refresh p99 during the login storm",
    }
    # The table and the targets are printed, one line per scenario and per target.
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["scenario", "conns", "req/s"] for line in lines)
    for name in expected:
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert any(line.strip().startswith(("PASS", "MISS")) for line in lines)


def test_bench_refuses_an_unknown_scenario() -> None:
    result = subprocess.run(
        [TASKSTACK, "bench", "--only", "list,nonsense"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown scenario nonsense" in result.stderr


def test_raw_floor_answers_the_first_page_exactly_as_the_tasks_service(
    database_url: URL, postgres: PostgresServer
) -> None:
    secret = "bench-floor-test-cursor-secret"
    data = seed(database_url, users=3, tasks=3 * 30, hashed=None)
    mint = TokenMint()
    floor = RawFloor(postgres.libpq(database_url), pool_size=2, cursor_secret=secret.encode())
    with (
        serve(jwks_app(mint)) as jwks_base,
        serve(
            create_app(
                tasks_settings(
                    database_url,
                    f"{jwks_base}/.well-known/jwks.json",
                    tasks_cursor_secret=secret,
                )
            )
        ) as tasks_base,
        serve(floor) as floor_base,
    ):
        for user in data.users:
            service = httpx.get(
                f"{tasks_base}/v1/tasks",
                headers={"Authorization": f"Bearer {mint.token(user.id)}"},
                timeout=10,
            )
            raw = httpx.get(f"{floor_base}/v1/tasks", headers={"x-owner": str(user.id)}, timeout=10)
            assert service.status_code == raw.status_code == 200
            assert len(raw.json()["items"]) == 20 and raw.json()["next_cursor"]
            assert raw.content == service.content


class _Recorder:
    """An ASGI app that records what it is sent and refuses every third request with a 503."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        note = dict(scope["headers"]).get(b"x-note", b"").decode()
        self.seen.append((scope["method"], scope["path"], note + "|" + body.decode()))
        status = 503 if len(self.seen) % 3 == 0 else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_wrk_sends_the_requests_verbatim_and_counts_every_refusal(tmp_path: Path) -> None:
    note = 'quote " backslash \\ and ünïcode'
    requests = [
        Request("POST", "/one", {"x-note": note}, json.dumps({"title": note}, ensure_ascii=False)),
        Request("GET", "/two?a=1&b=%20"),
    ]
    require("wrk")
    recorder = _Recorder()
    with serve(recorder) as base_url:
        script = wrk.rotating_script(tmp_path / "rotate.lua", requests)
        result = wrk.run(base_url, script, connections=2, seconds=1, scenario="verbatim")

    assert result.requests > 0
    # wrk stops with up to one request in flight per connection: answered, never counted.
    answered, refused = len(recorder.seen), len(recorder.seen) // 3
    assert answered - 2 <= sum(result.statuses.values()) <= answered
    assert refused - 2 <= result.statuses[503] <= refused
    assert result.errors() == result.statuses[503] > 0
    assert f"{result.statuses[503]} x HTTP 503" in result.describe_errors()
    assert result.errors(allowed=frozenset({503})) == 0
    assert set(recorder.seen) == {
        ("POST", "/one", note + "|" + json.dumps({"title": note}, ensure_ascii=False)),
        ("GET", "/two", "|"),
    }


def test_rounds_of_one_load_combine_into_totals_and_worst_tails() -> None:
    def result(requests: int, p50: float, p99: float, statuses: dict[int, int]) -> wrk.WrkResult:
        latency = {"mean": p50, "max": p99 * 2, "p50": p50, "p90": p99 / 2, "p99": p99}
        sockets = {"connect": 0, "read": 1, "write": 0, "timeout": 0}
        return wrk.WrkResult(requests, 5.0, statuses, sockets, latency)

    combined = wrk.combine(
        [result(100, 10.0, 30.0, {200: 99, 503: 1}), result(300, 20.0, 25.0, {200: 300})]
    )
    assert (combined.requests, combined.seconds, combined.rps) == (400, 10.0, 40.0)
    assert combined.statuses == {200: 399, 503: 1}
    assert combined.errors() == 1 + 2  # the refusal and one read error per round
    assert combined.latency_ms["p50"] == 15.0
    assert combined.latency_ms["p99"] == 30.0 and combined.latency_ms["max"] == 60.0
    assert combined.latency_ms["mean"] == (100 * 10.0 + 300 * 20.0) / 400
