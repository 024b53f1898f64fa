"""The auth service boots against its migrated schema and serves health and docs."""

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.config import AuthSettings
from taskstack.auth.main import create_app
from tests.support.servers import serve


@pytest.fixture(scope="module")
def auth(migrated_database: URL) -> Iterator[httpx.Client]:
    settings = AuthSettings.model_validate(
        {"database_url": migrated_database.render_as_string(hide_password=False)}
    )
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as client:
        yield client


def test_health_and_docs(auth: httpx.Client) -> None:
    assert auth.get("/livez").json() == {"status": "ok"}
    assert auth.get("/readyz").json()["status"] == "ready"
    schema = auth.get("/v1/auth/openapi.json").json()
    assert schema["info"]["title"] == "taskstack auth"
    assert auth.get("/v1/auth/docs").status_code == 200
