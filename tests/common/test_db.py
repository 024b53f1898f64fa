"""The request-scoped session commits once, rolls back on error, and survives transient faults."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.common.db import is_transient
from tests.common.conftest import count_notes
from tests.common.demo import Faults, demo_app
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.support.tcp_proxy import tcp_proxy


def test_success_commits(demo: httpx.Client, clean_demo_database: URL) -> None:
    response = demo.post("/v1/demo/notes", json={"text": "kept"})
    assert response.status_code == 201
    assert response.json()["version"] == 1
    assert count_notes(clean_demo_database) == 1


def test_an_error_rolls_back_everything_the_request_wrote(
    demo: httpx.Client, clean_demo_database: URL
) -> None:
    response = demo.post("/v1/demo/notes-then-conflict", json={"text": "discarded"})
    assert response.status_code == 409
    assert count_notes(clean_demo_database) == 0


@pytest.mark.parametrize("kind", ["serialization", "disconnect"])
def test_transient_failure_replays_the_request_and_applies_it_once(
    demo: httpx.Client, faults: Faults, clean_demo_database: URL, kind: str
) -> None:
    faults.kind, faults.remaining = kind, 2
    response = demo.post("/v1/demo/notes", json={"text": "third time lucky"})
    assert response.status_code == 201, response.text
    assert response.json()["text"] == "third time lucky"  # the body was replayed
    assert faults.attempts == 3
    assert count_notes(clean_demo_database) == 1


def test_persistent_transient_failure_is_a_fast_503(
    demo: httpx.Client, faults: Faults, clean_demo_database: URL
) -> None:
    faults.kind, faults.remaining = "serialization", 100
    started = time.monotonic()
    response = demo.post("/v1/demo/notes", json={"text": "never"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert time.monotonic() - started < 5.0  # the pool-timeout budget
    assert faults.attempts == 3
    assert count_notes(clean_demo_database) == 0


def test_full_pool_answers_503_within_the_acquire_timeout(clean_demo_database: URL) -> None:
    app, _ = demo_app(clean_demo_database, database_pool_size=1, database_pool_timeout=0.5)
    with serve(app) as base_url, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(
            httpx.get, f"{base_url}/v1/demo/sleep", params={"seconds": 2}, timeout=10
        )
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.get(f"{base_url}/v1/demo/sleep", params={"seconds": 0}, timeout=10)
        waited = time.monotonic() - started
        assert slow.result().status_code == 200
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert 0.4 < waited < 1.5


def test_database_outage_answers_fast_503_then_recovers(clean_demo_database: URL) -> None:
    with tcp_proxy(clean_demo_database) as proxy:
        app, _ = demo_app(proxy.url, database_pool_timeout=2)
        with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
            assert client.post("/v1/demo/notes", json={"text": "before"}).status_code == 201
            proxy.cut()
            started = time.monotonic()
            during = client.post("/v1/demo/notes", json={"text": "during"})
            assert during.status_code == 503
            assert time.monotonic() - started < 2.5
            assert client.get("/livez").status_code == 200
            proxy.restore()
            assert client.post("/v1/demo/notes", json={"text": "after"}).status_code == 201
    assert count_notes(clean_demo_database) == 2


def test_only_transient_database_errors_are_retried() -> None:
    assert not is_transient(ValueError("not a database error"))


def test_connections_the_server_dropped_are_replaced_without_a_failed_request(
    clean_demo_database: URL, postgres: PostgresServer
) -> None:
    """Without pre-ping (the default), a dead pooled connection costs a replay, not an error."""
    app, _ = demo_app(clean_demo_database, database_pool_size=4)
    assert app.state.database.engine.pool._pre_ping is False
    with serve(app) as base_url, ThreadPoolExecutor(4) as pool:

        def create(text: str) -> int:
            return httpx.post(
                f"{base_url}/v1/demo/notes", json={"text": text}, timeout=10
            ).status_code

        assert set(pool.map(create, [f"warm {i}" for i in range(16)])) == {201}
        with psycopg.connect(postgres.libpq(clean_demo_database), autocommit=True) as conn:
            killed = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'taskstack-demo' AND datname = current_database()"
            ).fetchone()
        assert killed is not None and killed[0] >= 2
        after = list(pool.map(create, [f"after {i}" for i in range(16)]))
    assert after == [201] * 16
    assert count_notes(clean_demo_database) == 32
