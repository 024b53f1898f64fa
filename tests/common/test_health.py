"""/livez never touches the database; /readyz follows it down and back up."""

import time

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.common.demo import demo_app
from tests.support.servers import serve
from tests.support.tcp_proxy import tcp_proxy


def wait_for_status(client: httpx.Client, path: str, status: int, within: float) -> float:
    started = time.monotonic()
    while (response := client.get(path)).status_code != status:
        assert time.monotonic() - started < within, response.text
        time.sleep(0.1)
    return time.monotonic() - started


def test_readiness_follows_the_database_down_and_back_up(demo_database: URL) -> None:
    with tcp_proxy(demo_database) as proxy:
        app, _ = demo_app(proxy.url, readiness_timeout=1)
        with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "checks": {"database": "ok"}}

            assert (
                'taskstack_ready{check="database",service="demo"} 1.0'
                in client.get("/metrics").text
            )
            proxy.cut()
            down = client.get("/readyz")
            assert down.status_code == 503
            assert down.headers["content-type"] == "application/problem+json"
            assert "database" in down.json()["detail"]
            assert client.get("/livez").json() == {"status": "ok"}
            assert (
                'taskstack_ready{check="database",service="demo"} 0.0'
                in client.get("/metrics").text
            )

            proxy.restore()
            assert wait_for_status(client, "/readyz", 200, within=5) < 5


def test_a_service_readiness_check_gates_readiness(demo_database: URL) -> None:
    state = {"keys_loaded": False}

    async def keys_loaded() -> bool:
        return state["keys_loaded"]

    app, _ = demo_app(demo_database, checks={"keys": keys_loaded})
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["detail"] == "Not ready: keys."
        state["keys_loaded"] = True
        assert client.get("/readyz").json()["checks"] == {"database": "ok", "keys": "ok"}


def test_a_check_that_hangs_counts_as_not_ready(demo_database: URL) -> None:
    async def hangs() -> bool:
        import asyncio

        await asyncio.sleep(60)
        return True

    app, _ = demo_app(demo_database, checks={"slow": hangs}, readiness_timeout=0.3)
    with serve(app) as base_url:
        started = time.monotonic()
        response = httpx.get(f"{base_url}/readyz", timeout=10)
        assert response.status_code == 503
        assert time.monotonic() - started < 2


def test_startup_waits_for_the_database_and_gives_up_after_the_window(demo_database: URL) -> None:
    with tcp_proxy(demo_database) as proxy:
        proxy.cut()
        app, _ = demo_app(proxy.url, database_startup_timeout=1)
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="did not start"), serve(app):
            pass
        assert 0.5 < time.monotonic() - started < 10
