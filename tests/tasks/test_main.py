"""The tasks service boots, verifies tokens against a JWKS it fetches, and reports readiness."""

import time

import httpx
from sqlalchemy.engine import URL

from taskstack.tasks.main import create_app
from tests.support.servers import serve
from tests.support.tcp_proxy import tcp_proxy
from tests.support.tokens import TokenMint
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


def test_a_database_outage_is_a_fast_503_then_recovers(
    database_url: URL, jwks_url: str, mint: TokenMint
) -> None:
    headers = {"Authorization": f"Bearer {mint.token()}"}
    with tcp_proxy(database_url) as proxy:
        app = create_app(tasks_settings(proxy.url, jwks_url, database_pool_timeout=2))
        with (
            serve(app) as base_url,
            httpx.Client(base_url=base_url, headers=headers, timeout=10) as client,
        ):
            assert client.post("/v1/tasks", json={"title": "before"}).status_code == 201
            proxy.cut()
            for method, path in (("POST", "/v1/tasks"), ("GET", "/v1/tasks")):
                started = time.monotonic()
                during = client.request(method, path, json={"title": "during"})
                assert during.status_code == 503
                assert during.headers["retry-after"] == "1"
                assert during.headers["content-type"] == "application/problem+json"
                assert "Traceback" not in during.text
                assert time.monotonic() - started < 2.5
            assert client.get("/livez").status_code == 200
            proxy.restore()
            assert client.post("/v1/tasks", json={"title": "after"}).status_code == 201
            titles = [task["title"] for task in client.get("/v1/tasks").json()["items"]]
    assert titles == ["after", "before"]


def test_answers_are_in_utc_whatever_the_session_time_zone(
    database_url: URL, jwks_url: str, mint: TokenMint
) -> None:
    tokyo = database_url.update_query_dict({"options": "-c TimeZone=Asia/Tokyo"})
    headers = {"Authorization": f"Bearer {mint.token()}"}
    with (
        serve(create_app(tasks_settings(tokyo, jwks_url))) as base_url,
        httpx.Client(base_url=base_url, headers=headers) as client,
    ):
        created = client.post(
            "/v1/tasks",
            json={"title": "t", "completed": True, "due_at": "2030-01-01T09:00:00+09:00"},
        ).json()
        listed = client.get("/v1/tasks").json()["items"][0]
    for task in (created, listed):
        assert task["due_at"] == "2030-01-01T00:00:00Z"
        for field in ("created_at", "updated_at", "completed_at"):
            assert task[field].endswith("Z"), task[field]
