"""The tasks service boots against its migrated schema and serves health and docs."""

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.tasks.config import TasksSettings
from taskstack.tasks.main import create_app
from tests.support.servers import serve


@pytest.fixture(scope="module")
def tasks(migrated_database: URL) -> Iterator[httpx.Client]:
    settings = TasksSettings.model_validate(
        {"database_url": migrated_database.render_as_string(hide_password=False)}
    )
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as client:
        yield client


def test_health_and_docs(tasks: httpx.Client) -> None:
    assert tasks.get("/livez").json() == {"status": "ok"}
    assert tasks.get("/readyz").json()["status"] == "ready"
    schema = tasks.get("/v1/tasks/openapi.json").json()
    assert schema["info"]["title"] == "taskstack tasks"
    assert tasks.get("/v1/tasks/docs").status_code == 200
