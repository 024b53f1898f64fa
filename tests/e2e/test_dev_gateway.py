"""`taskstack up`'s development gateway forwards as nginx does, so no answer differs by gateway."""

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy.engine import URL
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from taskstack.bench.processes import free_port
from taskstack.dev.gateway import SERVER_OPTIONS, DevGateway
from taskstack.tasks.main import create_app
from tests.e2e.gateway import nginx
from tests.support.servers import serve
from tests.support.tokens import TokenMint
from tests.tasks.conftest import jwks_app, tasks_settings

FORWARDING = ("host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip")


def header_echo() -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({name: request.headers.get(name) for name in FORWARDING})

    return Starlette(routes=[Route("/v1/auth/echo", echo)])


@pytest.fixture(scope="module")
def gateways(migrated_database: URL) -> Iterator[dict[str, str]]:
    """The base URL of each gateway, both in front of the same two services."""
    mint = TokenMint()
    with serve(jwks_app(mint)) as jwks:
        settings = tasks_settings(migrated_database, f"{jwks}/.well-known/jwks.json")
        with serve(create_app(settings)) as tasks, serve(header_echo()) as echo:
            upstreams = {"tasks": tasks, "auth": echo}
            routes = [("/v1/tasks", tasks), ("/v1/auth", echo)]
            addresses = {name: [url.removeprefix("http://")] for name, url in upstreams.items()}
            with (
                serve(DevGateway(routes), **SERVER_OPTIONS) as development,
                nginx(
                    addresses, {"/v1/tasks": "tasks", "/v1/auth": "auth"}, port=free_port()
                ) as ingress,
            ):
                yield {"development": development, "nginx": ingress.base_url}


def origin(base_url: str) -> str:
    return base_url.removeprefix("http://")


def test_both_pass_the_clients_host_and_overwrite_what_a_client_claims(
    gateways: dict[str, str],
) -> None:
    claims = {
        "x-forwarded-for": "203.0.113.7",
        "x-forwarded-host": "evil.example",
        "x-real-ip": "1.2.3.4",
    }
    seen = {
        name: httpx.get(f"{base}/v1/auth/echo", headers=claims).json()
        for name, base in gateways.items()
    }
    for name, base in gateways.items():
        assert seen[name] == {
            "host": origin(base),
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-proto": "http",
            "x-forwarded-host": origin(base),
            "x-real-ip": None,
        }, name


def test_both_redirect_a_trailing_slash_to_their_own_origin(gateways: dict[str, str]) -> None:
    for name, base in gateways.items():
        response = httpx.get(f"{base}/v1/tasks/?limit=5")
        assert response.status_code == 307, name
        assert response.headers["location"] == f"{base}/v1/tasks?limit=5", name
