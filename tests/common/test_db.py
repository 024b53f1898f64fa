"""The request-scoped session commits once, rolls back on error, and survives transient faults."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, literal, select, text
from sqlalchemy.engine import URL

from taskstack.common import db, pool
from taskstack.common.db import is_transient
from taskstack.common.settings import ServiceSettings
from tests.common.conftest import count_notes
from tests.common.demo import FAULT_SQL, LOSE_CONNECTION_AT_COMMIT, SCHEMA, Faults, demo_app
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


def test_connection_lost_during_commit_is_a_503_and_never_replayed(
    demo: httpx.Client, faults: Faults, clean_demo_database: URL
) -> None:
    # Whether a COMMIT whose connection dropped landed is unknown to the service;
    # replaying the request could apply the write twice, so the client decides
    # (with an idempotency key, say) what to do about it.
    response = demo.post("/v1/demo/notes", json={"text": LOSE_CONNECTION_AT_COMMIT})
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert "may or may not have been applied" in response.json()["detail"]
    assert faults.attempts == 1
    assert count_notes(clean_demo_database) == 0  # the trigger aborted this COMMIT
    # The pool dropped the dead connection: the next request works.
    assert demo.post("/v1/demo/notes", json={"text": "after"}).status_code == 201


def test_pooled_connections_the_server_ended_are_replaced_before_use(
    demo: httpx.Client, faults: Faults, clean_demo_database: URL
) -> None:
    # As after a database restart: every idle pooled connection is dead. The
    # server said so on each before closing it, and the pool sees that on
    # checkout (a poll of the socket, no round trip), so no request sees it.
    assert demo.post("/v1/demo/notes", json={"text": "before"}).status_code == 201
    engine = create_engine(clean_demo_database)
    demo_backends = (
        "FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'taskstack-demo'"
    )
    # Autocommit: a transaction would see one snapshot of pg_stat_activity throughout.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        ended = conn.execute(text(f"SELECT count(pg_terminate_backend(pid)) {demo_backends}"))
        assert ended.scalar_one() >= 1
        # pg_terminate_backend only signals: wait until each server process has said
        # why and gone, as after a restart, before the next request checks out.
        deadline = time.monotonic() + 5
        while conn.execute(text(f"SELECT count(*) {demo_backends}")).scalar_one():
            assert time.monotonic() < deadline, "the ended server processes did not go"
            time.sleep(0.02)
    engine.dispose()
    faults.attempts = 0
    assert demo.post("/v1/demo/notes", json={"text": "after"}).status_code == 201
    assert faults.attempts == 1  # served on the first try, not by a retry
    assert count_notes(clean_demo_database) == 2


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


def test_a_database_that_stops_answering_gives_503_within_the_connect_timeout(
    clean_demo_database: URL,
) -> None:
    # A hung server or a half-open connection: bytes go out, nothing comes back,
    # and nothing tells the client. The first answer on a pooled connection, and
    # a new connection, must be given up on within the connect timeout.
    with tcp_proxy(clean_demo_database) as proxy:
        app, _ = demo_app(proxy.url, database_pool_timeout=1, database_connect_timeout=1)
        with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=40) as client:
            assert client.post("/v1/demo/notes", json={"text": "before"}).status_code == 201
            proxy.freeze()
            for attempt in ("pooled connection", "new connection"):
                started = time.monotonic()
                response = client.post("/v1/demo/notes", json={"text": "frozen"})
                waited = time.monotonic() - started
                assert response.status_code == 503, attempt
                assert response.headers["content-type"] == "application/problem+json"
                assert response.headers["retry-after"] == "1"
                assert waited < 2.0, attempt
            proxy.thaw()
            assert client.post("/v1/demo/notes", json={"text": "after"}).status_code == 201
    assert count_notes(clean_demo_database) == 2


def test_a_statement_slower_than_the_connect_timeout_goes_on_while_the_server_answers(
    clean_demo_database: URL, postgres: PostgresServer
) -> None:
    # A pooled connection handed out unchecked: its first statement, waiting for a
    # lock longer than the connect timeout, is not taken for a hung server, since
    # the server still answers on a connection of its own.
    app, _ = demo_app(clean_demo_database, database_connect_timeout=1)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=20) as client:
        assert client.post("/v1/demo/notes", json={"text": "before"}).status_code == 201
        with psycopg.connect(postgres.libpq(clean_demo_database)) as lock:
            lock.execute(f"LOCK TABLE {SCHEMA}.note IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(client.post, "/v1/demo/notes", json={"text": "slow"})
                time.sleep(2.5)
                assert not waiting.done()
                lock.rollback()
                response = waiting.result(timeout=10)
    assert response.status_code == 201
    assert count_notes(clean_demo_database) == 2


def test_only_transient_database_errors_are_retried() -> None:
    assert not is_transient(ValueError("not a database error"))


def _end_demo_connections(postgres: PostgresServer, url: URL) -> int:
    """End every server process of the demo apps' pools, and wait until they are gone."""
    query = (
        "SELECT {} FROM pg_stat_activity "
        "WHERE application_name = 'taskstack-demo' AND datname = current_database()"
    )
    with psycopg.connect(postgres.libpq(url), autocommit=True) as conn:
        row = conn.execute(
            query.format("count(*) FILTER (WHERE pg_terminate_backend(pid))")
        ).fetchone()
        assert row is not None
        for _ in range(100):
            left = conn.execute(query.format("count(*)")).fetchone()
            if left is not None and left[0] == 0:
                break
            time.sleep(0.05)
    return int(row[0])


def test_connections_the_server_dropped_are_replaced_without_a_failed_request(
    clean_demo_database: URL, postgres: PostgresServer
) -> None:
    app, faults = demo_app(clean_demo_database, database_pool_size=4)
    with serve(app) as base_url, ThreadPoolExecutor(4) as pool:

        def create(text: str) -> int:
            return httpx.post(
                f"{base_url}/v1/demo/notes", json={"text": text}, timeout=10
            ).status_code

        assert set(pool.map(create, [f"warm {i}" for i in range(16)])) == {201}
        assert _end_demo_connections(postgres, clean_demo_database) >= 2
        faults.attempts = 0
        after = list(pool.map(create, [f"after {i}" for i in range(16)]))
    assert after == [201] * 16
    assert faults.attempts == 16  # each found a live connection on its first try
    assert count_notes(clean_demo_database) == 32


def test_a_dead_connection_taken_unchecked_costs_a_replay_not_an_error(
    clean_demo_database: URL, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection the server ended without the pool noticing (its goodbye not
    # yet arrived, say) fails on its first statement: the request is replayed
    # on a new connection, and the client sees a success.
    monkeypatch.setattr(pool, "_has_input", lambda connection: False)
    app, faults = demo_app(clean_demo_database, database_pool_size=1)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.post("/v1/demo/notes", json={"text": "before"}).status_code == 201
        assert _end_demo_connections(postgres, clean_demo_database) >= 1
        faults.attempts = 0
        assert client.post("/v1/demo/notes", json={"text": "after"}).status_code == 201
    assert faults.attempts == 2  # the failed first try, and its replay
    assert count_notes(clean_demo_database) == 2


def test_a_pooled_connection_idle_past_the_threshold_is_checked_first(
    clean_demo_database: URL, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "_has_input", lambda connection: False)
    app, faults = demo_app(
        clean_demo_database, database_pool_size=1, database_pool_check_idle_seconds=0
    )
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.post("/v1/demo/notes", json={"text": "before"}).status_code == 201
        assert _end_demo_connections(postgres, clean_demo_database) >= 1
        faults.attempts = 0
        assert client.post("/v1/demo/notes", json={"text": "after"}).status_code == 201
    assert faults.attempts == 1  # the check found it dead: no replay was needed


@pytest.mark.parametrize(
    ("pooler", "pooler_prepares", "prepared"),
    [(False, False, True), (True, False, False), (True, True, True)],
)
def test_statements_are_prepared_unless_a_pooler_cannot_keep_them(
    clean_demo_database: URL, pooler: bool, pooler_prepares: bool, prepared: bool
) -> None:
    settings = ServiceSettings.model_validate(
        {
            "database_url": clean_demo_database.render_as_string(hide_password=False),
            "database_transaction_pooler": pooler,
            "database_pooler_prepared_statements": pooler_prepares,
        }
    )
    statement = db.Statement.of(select(literal(1).label("one")))

    async def prepared_here() -> int:
        database = db.Database(settings, service="demo")
        try:
            async with database.read() as connection:
                assert await db.fetch_one(connection, statement, {}) == (1,)
                cursor = await connection.execute("SELECT count(*) FROM pg_prepared_statements")
                row = await cursor.fetchone()
        finally:
            await database.close()
        assert row is not None
        return int(row[0])

    assert (asyncio.run(prepared_here()) > 0) is prepared


def _database(url: URL) -> db.Database:
    settings = ServiceSettings.model_validate(
        {"database_url": url.render_as_string(hide_password=False)}
    )
    return db.Database(settings, service="demo")


def test_a_single_write_commits_as_it_runs_with_no_transaction_around_it(
    clean_demo_database: URL,
) -> None:
    async def write_one() -> tuple[bool, psycopg.pq.TransactionStatus]:
        database = _database(clean_demo_database)
        try:
            async with database.single_write() as connection:
                await connection.execute(
                    "INSERT INTO demo.note (id, text, version) VALUES (gen_random_uuid(), 'x', 1)"
                )
                return connection.autocommit, connection.info.transaction_status
        finally:
            await database.close()

    autocommit, status = asyncio.run(write_one())
    assert autocommit and status is psycopg.pq.TransactionStatus.IDLE
    assert count_notes(clean_demo_database) == 1


def test_a_connection_lost_during_a_single_write_is_an_unknown_outcome_not_a_replay(
    clean_demo_database: URL,
) -> None:
    async def lose_it(fault: str) -> BaseException:
        database = _database(clean_demo_database)
        try:
            async with database.single_write() as connection:
                await connection.execute(fault)
        except Exception as exc:
            return exc
        finally:
            await database.close()
        raise AssertionError("the fault did not fail")

    lost = asyncio.run(lose_it("SELECT pg_terminate_backend(pg_backend_pid())"))
    assert isinstance(lost, db.OutcomeUnknown) and not is_transient(lost)
    assert "may or may not have been applied" in str(lost.detail)
    # A statement the server rolled back for certain is replayed as usual.
    rolled_back = asyncio.run(lose_it(FAULT_SQL["serialization"]))
    assert isinstance(rolled_back, psycopg.errors.SerializationFailure)
    assert is_transient(rolled_back)
