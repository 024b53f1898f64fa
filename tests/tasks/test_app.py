"""The tasks service boots, verifies tokens against a JWKS it fetches, and reports readiness."""

import httpx
from sqlalchemy.engine import URL

from taskstack.tasks.main import create_app
from tests.support.servers import serve
from tests.tasks.conftest import Api, tasks_settings


def test_health_and_docs(api: Api) -> None:
    client = api.anonymous()
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready == {"status": "ready", "checks": {"database": "ok", "jwks": "ok"}}
    schema = client.get("/v1/tasks/openapi.json").json()
    assert schema["info"]["title"] == "taskstack tasks"
    assert client.get("/v1/tasks/docs").status_code == 200


def test_not_ready_until_the_jwks_is_loaded(migrated_database: URL) -> None:
    settings = tasks_settings(
        migrated_database, "http://127.0.0.1:9/.well-known/jwks.json", jwks_cache_seconds=60
    )
    with serve(create_app(settings)) as base_url:
        ready = httpx.get(f"{base_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["detail"] == "Not ready: jwks."
        assert httpx.get(f"{base_url}/livez").status_code == 200
