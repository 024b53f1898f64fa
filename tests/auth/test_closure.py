"""Deleting an account: auth deletes it, and through the account-event outbox the tasks
service purges its tasks and refuses its still-valid tokens, even when it was down."""

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.keys import load_signing_keys
from taskstack.auth.main import create_app as create_auth
from taskstack.common.tokens import INTERNAL_SUBJECT
from taskstack.tasks.main import create_app as create_tasks
from tests.support.auth import STRONG_PASSWORD, auth_settings, bearer, login, register_id
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.tasks.conftest import tasks_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _count(postgres: PostgresServer, url: URL, sql: str, *params: object) -> int:
    with psycopg.connect(postgres.libpq(url), autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def stack(migrated_database: URL, database_url: URL, keys_dir: Path) -> Iterator[tuple[str, int]]:
    """auth, pushing its events to a tasks port nothing serves yet; the test starts tasks."""
    tasks_port = _free_port()
    settings = auth_settings(
        migrated_database,
        keys_dir,
        auth_events_url=f"http://127.0.0.1:{tasks_port}/internal/account-events",
        outbox_poll_seconds=0.1,
        outbox_retry_base_seconds=0.2,
        outbox_retry_max_seconds=0.5,
    )
    with serve(create_auth(settings)) as auth_url:
        yield auth_url, tasks_port


def _start_tasks(
    migrated_database: URL, auth_url: str, port: int
) -> contextlib.AbstractContextManager[str]:
    settings = tasks_settings(migrated_database, f"{auth_url}/.well-known/jwks.json")
    return serve(create_tasks(settings), port=port)


def _wait(condition: object, timeout: float = 15.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def test_deleting_an_account_while_tasks_is_down_purges_its_tasks_once_tasks_is_back(
    stack: tuple[str, int],
    migrated_database: URL,
    database_url: URL,
    postgres: PostgresServer,
) -> None:
    auth_url, tasks_port = stack
    tasks_url = f"http://127.0.0.1:{tasks_port}"
    with httpx.Client(base_url=auth_url) as auth:
        user_id = register_id(auth, "ada@example.com")
        access = login(auth, "ada@example.com").json()["access_token"]
        register_id(auth, "bob@example.com")
        other = login(auth, "bob@example.com").json()["access_token"]
        with (
            _start_tasks(migrated_database, auth_url, tasks_port),
            httpx.Client(base_url=tasks_url) as tasks,
        ):
            for n in range(3):
                created = tasks.post(
                    "/v1/tasks",
                    json={"title": f"t{n}"},
                    headers={**bearer(access), "Idempotency-Key": f"k{n}"},
                )
                assert created.status_code == 201
            assert tasks.post("/v1/tasks", json={"title": "b"}, headers=bearer(other)).is_success
        # tasks is down now.
        wrong = auth.request(
            "DELETE", "/v1/auth/me", json={"password": "not it"}, headers=bearer(access)
        )
        assert wrong.status_code == 400
        deleted = auth.request(
            "DELETE", "/v1/auth/me", json={"password": STRONG_PASSWORD}, headers=bearer(access)
        )
        assert deleted.status_code == 204
        assert auth.get("/v1/auth/me", headers=bearer(access)).status_code == 401
        assert login(auth, "ada@example.com").status_code == 400
        _wait(
            lambda: (
                _count(postgres, database_url, "SELECT max(attempts) FROM auth.account_event") >= 2
            )
        )
        owned = "SELECT count(*) FROM tasks.task WHERE owner_id = %s"
        assert _count(postgres, database_url, owned, user_id) == 3

        with (
            _start_tasks(migrated_database, auth_url, tasks_port),
            httpx.Client(base_url=tasks_url) as tasks,
        ):
            _wait(lambda: _count(postgres, database_url, owned, user_id) == 0)
            keys = "SELECT count(*) FROM tasks.idempotency_key WHERE owner_id = %s"
            assert _count(postgres, database_url, keys, user_id) == 0
            counted = "SELECT count(*) FROM tasks.task_count WHERE owner_id = %s"
            assert _count(postgres, database_url, counted, user_id) == 0
            _wait(
                lambda: (
                    _count(postgres, database_url, "SELECT count(*) FROM auth.account_event") == 0
                )
            )
            assert tasks.get("/v1/tasks", headers=bearer(access)).status_code == 401
            assert tasks.get("/v1/tasks", headers=bearer(other)).status_code == 200
            assert _count(postgres, database_url, "SELECT count(*) FROM tasks.task") == 1


def test_an_event_applies_once_and_only_an_internal_token_may_push_one(
    stack: tuple[str, int],
    migrated_database: URL,
    keys_dir: Path,
) -> None:
    auth_url, tasks_port = stack
    keys = load_signing_keys(keys_dir, None, production=False)
    internal = keys.issue_access_token(
        INTERNAL_SUBJECT,
        issuer="http://127.0.0.1:8000",
        audience="taskstack-internal",
        lifetime=60,
    )
    user = keys.issue_access_token(
        INTERNAL_SUBJECT, issuer="http://127.0.0.1:8000", audience="taskstack", lifetime=60
    )
    event = {"id": 7, "user_id": "0190b0d0-0000-7000-8000-000000000001", "kind": "disabled"}
    with (
        _start_tasks(migrated_database, auth_url, tasks_port) as tasks_url,
        httpx.Client(base_url=tasks_url) as tasks,
    ):
        path = "/internal/account-events"
        assert tasks.post(path, json=event, headers=bearer(user)).status_code == 401
        assert tasks.post(path, json=event).status_code == 401
        assert tasks.post(path, json=event, headers=bearer(internal)).status_code == 204
        assert tasks.post(path, json=event, headers=bearer(internal)).status_code == 204
        older = {**event, "id": 6, "kind": "enabled"}
        assert tasks.post(path, json=older, headers=bearer(internal)).status_code == 204
        bad = tasks.post(path, json={**event, "kind": "eaten"}, headers=bearer(internal))
        assert bad.status_code == 422
        assert tasks.get("/v1/tasks", headers=bearer(internal)).status_code == 401
