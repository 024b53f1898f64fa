"""`taskstack bench`: every scenario runs end to end, error-free, the floor answers as the
service does, and the report computes its targets right."""

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import psycopg.sql
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key, load_signing_keys
from taskstack.bench import fidelity, workload, wrk
from taskstack.bench.environment import AUDIENCE, CURSOR_SECRET, ISSUER
from taskstack.bench.fidelity import FLOORS
from taskstack.bench.floor import Floor
from taskstack.bench.report import Report, Scenario
from taskstack.bench.runner import SCENARIOS
from taskstack.bench.seed import seed
from taskstack.bench.workload import Tokens
from taskstack.bench.wrk import Request, WrkResult
from taskstack.tasks.main import create_app
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.support.tools import require
from tests.tasks.conftest import tasks_settings

TASKSTACK = str(Path(sys.executable).with_name("taskstack"))
STORM = (
    "storm-login",
    "storm-jwks",
    "storm-refresh",
    "storm-livez",
    "quiet-jwks",
    "quiet-refresh",
    "quiet-livez",
)


def _smoke(
    postgres: PostgresServer, output: Path, *options: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    require("wrk")
    result = subprocess.run(
        [
            TASKSTACK,
            "bench",
            "--smoke",
            "--database-url",
            postgres.libpq(postgres.url),
            "--output",
            str(output),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, json.loads(output.read_text())


def test_smoke_run_measures_every_scenario_without_errors(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    result, report = _smoke(postgres, tmp_path / "bench.json")
    expected = [name for name in SCENARIOS if name not in ("storm", "overload")] + list(STORM)
    assert list(report["scenarios"]) == expected
    assert set(report["overload"]) == {"tasks", "auth"}  # its figures: test_overloaded.py
    for name, scenario in report["scenarios"].items():
        assert scenario["requests"] > 0, name
        assert scenario["errors"] == 0, (name, scenario["statuses"])
        assert scenario["latency_ms"]["p99"] >= scenario["latency_ms"]["p50"] > 0, name
    assert report["failures"] == []
    assert report["scenarios"]["list"]["vs_livez"] > 0
    for floor, service in FLOORS.items():
        assert report["scenarios"][service]["floor"] == floor
        assert report["scenarios"][service]["vs_floor"] > 0
        assert report["scenarios"][floor]["server"] == "floor"
    assert set(report["rss_mb"]) == {"auth", "tasks", "tasks-2k", "floor"}
    assert {target["name"] for target in report["targets"]} >= {
        "list first page vs floor-list",
        "get one task vs floor-get",
        "create vs floor-create",
        "patch vs floor-patch",
        "first page, 200,000 tasks vs 2,000",
        "refresh p99 during the login storm",
        "/livez p99 during the login storm (auth on 1 CPU)",
    }
    # The table and the targets are printed, one line per scenario and per target.
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["scenario", "conns", "req/s"] for line in lines)
    for name in expected:
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert any(line.strip().startswith(("PASS", "MISS")) for line in lines)


def test_smoke_run_of_the_writes_reads_and_their_floors_alone(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """No /livez, no second database: the floors are still measured, checked and compared."""
    selected = ["list", "get", "create", "patch", *FLOORS]
    result, report = _smoke(postgres, tmp_path / "bench.json", "--only", ",".join(selected))

    assert set(report["scenarios"]) == set(selected)
    assert all(s["errors"] == 0 and s["requests"] > 0 for s in report["scenarios"].values())
    assert report["failures"] == []
    assert set(report["rss_mb"]) == {"auth", "tasks", "floor"}
    assert {target["name"] for target in report["targets"]} == {
        "list first page vs floor-list",
        "list first page p99",
        "get one task vs floor-get",
        "create vs floor-create",
        "patch vs floor-patch",
        "errors, every scenario",
        "auth RSS after the run",
        "tasks RSS after the run",
    }
    assert "floors vs /livez" not in result.stdout


def test_bench_refuses_an_unknown_scenario() -> None:
    result = subprocess.run(
        [TASKSTACK, "bench", "--only", "list,nonsense"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown scenario nonsense" in result.stderr


@contextlib.contextmanager
def _session_zone(postgres: PostgresServer, database: URL, zone: str) -> Iterator[None]:
    """New sessions on ``database`` in this TimeZone."""
    name = psycopg.sql.Identifier(str(database.database))
    with psycopg.connect(postgres.libpq(database), autocommit=True) as conn:
        set_zone = psycopg.sql.SQL("ALTER DATABASE {} SET timezone = {}")
        conn.execute(set_zone.format(name, psycopg.sql.Literal(zone)))
    try:
        yield
    finally:
        with psycopg.connect(postgres.libpq(database), autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("ALTER DATABASE {} RESET timezone").format(name))


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_the_floor_answers_as_the_tasks_service(
    database_url: URL, postgres: PostgresServer, tmp_path: Path, zone: str
) -> None:
    """The benchmark's own requests, and writes that touch every field: the reads give the
    same bytes, the writes the same members and values, in any session time zone."""
    data = seed(database_url, users=3, tasks=3 * 30, hashed=None)
    generate_signing_key(tmp_path, development=True)
    tokens = Tokens(tmp_path, issuer=ISSUER, audience=AUDIENCE)
    keys = load_signing_keys(tmp_path, None, production=False)
    jwks = FastAPI()
    jwks.get("/.well-known/jwks.json")(keys.jwks)
    floor = Floor(postgres.libpq(database_url), pool_size=2, cursor_secret=CURSOR_SECRET.encode())
    samples = workload.sample_tasks(database_url, 6, seed=3)
    user = data.users[0].id
    json_type = {"Content-Type": "application/json"}
    unusual = {
        "title": 'Écrire « le rapport » \u2028 🦆 "quoted" \\',
        "description": "line\nbreak\ttab",
        "completed": True,
        "priority": "high",
        "due_at": "2031-02-03T04:05:06.070000+05:30",
        "tags": ["été", "work"],
    }
    cleared = {"description": None, "due_at": None, "completed": False, "tags": ["x"]}
    owner, task = samples[1]
    owner_headers = tokens.headers(owner, **json_type)
    mixes = {
        "create": [
            Request("POST", "/v1/tasks", tokens.headers(user, **json_type), json.dumps(unusual)),
            *workload.creations(data, tokens),
        ],
        # Lists after the creations: the new tasks come first, completed and not.
        "list": workload.first_pages(data, tokens),
        "get": workload.single_tasks(samples[::2], tokens),
        "patch": [
            Request("PATCH", f"/v1/tasks/{task}", owner_headers, json.dumps(unusual)),
            Request("PATCH", f"/v1/tasks/{task}", owner_headers, json.dumps(cleared)),
            *workload.patches(samples[1::2], tokens),
        ],
    }
    padded = Request("PATCH", f"/v1/tasks/{task}", owner_headers, json.dumps({"title": " padded "}))
    floors = {service: name for name, service in FLOORS.items()}
    with (
        _session_zone(postgres, database_url, zone),
        serve(jwks) as jwks_base,
        serve(
            create_app(
                tasks_settings(
                    database_url,
                    f"{jwks_base}/.well-known/jwks.json",
                    tasks_cursor_secret=CURSOR_SECRET,
                    token_issuer=ISSUER,
                    token_audience=AUDIENCE,
                )
            )
        ) as tasks_base,
        serve(floor) as floor_base,
    ):
        assert floor.convert is (zone != "UTC")
        for service, requests in mixes.items():
            problem = fidelity.check(
                floors[service],
                tasks_base,
                requests[: fidelity.SAMPLES],
                floor_base,
                workload.on_floor(requests, tokens)[: fidelity.SAMPLES],
            )
            assert problem is None
        # The whole list mix, not only its samples: a full page and a cursor each.
        page = httpx.get(f"{floor_base}/v1/tasks", headers={"x-owner": str(user)}, timeout=10)
        assert page.status_code == 200
        assert len(page.json()["items"]) == 20 and page.json()["next_cursor"]
        assert unusual["title"] in [item["title"] for item in page.json()["items"]]
        assert "Écrire".encode() in page.content  # raw UTF-8, as pydantic writes it
        # A title the service strips, and a body the floor does not validate, differ:
        # the comparison sees it.
        problem = fidelity.check(
            "floor-patch",
            tasks_base,
            [padded],
            floor_base,
            workload.on_floor([padded], tokens),
        )
        assert problem is not None and "floor-patch" in problem and "byte 10" in problem


def test_the_floor_refuses_what_it_does_not_serve(
    database_url: URL, postgres: PostgresServer
) -> None:
    floor = Floor(postgres.libpq(database_url), pool_size=1, cursor_secret=CURSOR_SECRET.encode())
    owner = {"x-owner": str(uuid.uuid4())}
    with serve(floor) as base, httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/v1/tasks").status_code == 400  # no x-owner
        assert client.get("/v1/tasks?limit=5", headers=owner).status_code == 400
        assert client.get("/v1/tasks/not-a-uuid", headers=owner).status_code == 400
        assert client.get(f"/v1/tasks/{uuid.uuid4()}", headers=owner).status_code == 404
        assert client.post("/v1/tasks", headers=owner, content=b"[1]").status_code == 400
        assert client.post("/v1/tasks", headers=owner, json={"nope": 1}).status_code == 400
        assert client.post("/v1/tasks", headers=owner, json={"title": None}).status_code == 400
        assert client.delete("/v1/tasks", headers=owner).status_code == 405
        # It keeps serving after refusals.
        created = client.post("/v1/tasks", headers=owner, json={"title": "ok"})
        assert created.status_code == 201
        assert created.headers["location"] == f"/v1/tasks/{created.json()['id']}"
        assert created.headers["etag"] == '"1"'


def test_a_difference_is_reported_with_its_first_byte() -> None:
    same = fidelity.Answer(200, b'{"a":1}')
    assert fidelity.compare("floor-get", same, fidelity.Answer(200, b'{"a":1}')) is None
    problem = fidelity.compare("floor-get", same, fidelity.Answer(200, b'{"a":2}'))
    assert problem is not None and problem.startswith("floor-get:") and "at byte 5" in problem
    shorter = fidelity.compare("floor-list", same, fidelity.Answer(200, b'{"a":1'))
    assert shorter is not None and "at byte 6" in shorter
    status = fidelity.compare("floor-list", same, fidelity.Answer(404, b'{"a":1}'))
    assert status == "floor-list: the service answered 200, the floor 404"
    # Writes: what each write sets anew is left out, the members' order is not.
    created = b'{"title":"t","id":"1","version":1,"created_at":"x"}'
    again = b'{"title":"t","id":"2","version":2,"created_at":"y"}'
    reordered = b'{"id":"2","title":"t","version":2,"created_at":"y"}'
    assert fidelity.compare("floor-create", *_answers(created, again)) is None
    problem = fidelity.compare("floor-create", *_answers(created, reordered))
    assert problem is not None and "at byte 2" in problem
    assert fidelity.compare("floor-get", *_answers(created, again)) is not None


def _answers(a: bytes, b: bytes) -> tuple[fidelity.Answer, fidelity.Answer]:
    return fidelity.Answer(201, a), fidelity.Answer(201, b)


def _result(rps: float, p99: float = 10.0, statuses: dict[int, int] | None = None) -> WrkResult:
    latency = {"mean": 1.0, "max": p99, "p50": 1.0, "p90": p99, "p99": p99}
    requests = int(rps * 10)
    sockets = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    return WrkResult(requests, 10.0, statuses or {200: requests}, sockets, latency)


def test_the_report_compares_each_service_scenario_with_its_floor() -> None:
    context = {
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu": "test", "cores": 2, "kernel": "6", "python": "3.11",
                    "load_average_start": 0.1},
        "settings": {"users": 1, "tasks": 1, "duration_seconds": 1, "warmup_seconds": 0,
                     "server_cpu": "0", "load_cpu": "1", "log_level": "WARNING",
                     "tracing": "off", "bcrypt_cost": 4},
    }  # fmt: skip
    report = Report(context=context)
    figures = {
        "livez": (8000, 5),
        "list": (1800, 40.0),  # 60% of its floor, p99 at the bound: both pass
        "floor-list": (3000, 8),
        "list-2k": (2000, 30),
        "deep": (1500, 40),  # 83% of the first page: a miss
        "get": (1000, 9),  # 50% of its floor: a miss
        "floor-get": (2000, 9),
        "create": (500, 9),  # exactly half: a pass
        "floor-create": (1000, 9),
        "patch": (499, 9),  # just under half: a miss
        "floor-patch": (1000, 9),
    }
    for name, (rps, p99) in figures.items():
        server = "floor" if name.startswith("floor-") else "tasks"
        report.add(Scenario(name, name, server, 32, _result(rps, p99), 0.5))
    report.rss_mb = {"auth": 120.0, "tasks": 151.0}

    met = {t.name: t.met for t in report.targets()}
    assert met == {
        "list first page vs floor-list": True,
        "list first page p99": True,
        "get one task vs floor-get": False,
        "create vs floor-create": True,
        "patch vs floor-patch": False,
        "first page, 200,000 tasks vs 2,000": True,
        "deep page vs first page": False,
        "errors, every scenario": True,
        "auth RSS after the run": True,
        "tasks RSS after the run": False,
    }
    assert report.vs_floor("list") == 0.6 and report.vs_floor("deep") is None
    scenarios = report.as_json()["scenarios"]
    assert scenarios["get"]["floor"] == "floor-get" and scenarios["get"]["vs_floor"] == 0.5
    assert scenarios["floor-list"]["vs_livez"] == 3000 / 8000
    table = report.table()
    assert "  PASS  list first page vs floor-list: 60% (>= 60%)" in table
    assert "  MISS  get one task vs floor-get: 50% (>= 60%)" in table
    assert "floors vs /livez, for reference: floor-list 38%, floor-get 25%, " in table

    report.add(
        Scenario("filtered", "filtered", "tasks", 32, _result(100, 5, {200: 990, 500: 10}), 1)
    )
    assert {t.name: t for t in report.targets()}["errors, every scenario"].met is False


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
