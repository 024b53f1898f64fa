"""The tasks service over real HTTP: a JWKS served like auth serves it, users with tokens."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import URL

from taskstack.tasks.config import TasksSettings
from taskstack.tasks.main import create_app
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.support.tokens import TokenMint


def jwks_app(mint: TokenMint) -> FastAPI:
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        return mint.jwks()

    return app


@pytest.fixture(scope="session")
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture(scope="session")
def jwks_url(mint: TokenMint) -> Iterator[str]:
    with serve(jwks_app(mint)) as base_url:
        yield f"{base_url}/.well-known/jwks.json"


def tasks_settings(database: URL, jwks_url: str, **overrides: object) -> TasksSettings:
    return TasksSettings.model_validate(
        {
            "database_url": database.render_as_string(hide_password=False),
            "jwks_url": jwks_url,
            "access_log": False,
            # Bursts here (fifty at once) test what the API does with each request;
            # a process would shed part of them within 10 ms. Admission has tests of
            # its own (tests/common/test_admission.py).
            "admission_queue_timeout_seconds": 10,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def tasks_front() -> bool:
    """TASKS_FRONT of the module's app. A module whose requests TaskFront may answer
    overrides it with a ``both_entries`` fixture, and so runs against both entries."""
    return True


# TASKS_FRONT on and off: TaskFront and the FastAPI routes.
both_entries = pytest.fixture(scope="module", params=[True, False], ids=["front", "routes"])


@pytest.fixture(scope="module")
def tasks_url(migrated_database: URL, jwks_url: str, tasks_front: bool) -> Iterator[str]:
    settings = tasks_settings(migrated_database, jwks_url, tasks_front=tasks_front)
    with serve(create_app(settings)) as base_url:
        yield base_url


class UserClient(httpx.Client):
    """An HTTP client whose requests carry one user's access token."""

    def __init__(self, base_url: str, mint: TokenMint, subject: uuid.UUID):
        super().__init__(
            base_url=base_url,
            headers={"Authorization": f"Bearer {mint.token(subject)}"},
            timeout=30,
        )
        self.subject = subject


class Api:
    """Clients of the tasks service, each speaking for one user."""

    def __init__(self, base_url: str, mint: TokenMint):
        self.base_url = base_url
        self.mint = mint
        self._clients: list[httpx.Client] = []

    def user(self, subject: uuid.UUID | None = None) -> UserClient:
        client = UserClient(self.base_url, self.mint, subject or uuid.uuid4())
        self._clients.append(client)
        return client

    def anonymous(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base_url, timeout=30)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def api(tasks_url: str, mint: TokenMint, database_url: URL) -> Iterator[Api]:
    api = Api(tasks_url, mint)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def alice(api: Api) -> UserClient:
    return api.user()


@pytest.fixture
def bob(api: Api) -> UserClient:
    return api.user()


class Database:
    """Direct SQL on the test database, to check what the API left behind."""

    def __init__(self, url: URL, postgres: PostgresServer):
        self.dsn = postgres.libpq(url)

    def rows(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, statement: str, *params: object) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement, params)

    def scalar(self, query: str, *params: object) -> Any:
        return self.rows(query, *params)[0][0]

    def task_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM tasks.task"))


@pytest.fixture
def db(database_url: URL, postgres: PostgresServer) -> Database:
    return Database(database_url, postgres)


def new_task(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/tasks", json={"title": "a task", **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
