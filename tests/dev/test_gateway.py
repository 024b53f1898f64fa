"""The development gateway routes by prefix like the Ingress and forwards like a proxy."""

from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from taskstack.dev.gateway import DevGateway
from taskstack.dev.services import SERVICES
from tests.support.servers import serve


def echo_app(name: str) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "service": name,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "body": (await request.body()).decode(),
                "forwarded_for": request.headers.get("x-forwarded-for"),
                "forwarded_host": request.headers.get("x-forwarded-host"),
                "authorization": request.headers.get("authorization"),
            },
            headers={"x-upstream": name},
        )

    return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "DELETE"])])


@pytest.fixture(scope="module")
def gateway() -> Iterator[httpx.Client]:
    with serve(echo_app("auth")) as auth, serve(echo_app("tasks")) as tasks:
        upstreams = {"auth": auth, "tasks": tasks}
        routes = [(p, upstreams[s.name]) for s in SERVICES for p in s.prefixes]
        with serve(DevGateway(routes)) as base, httpx.Client(base_url=base) as client:
            yield client


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/v1/auth/token", "auth"),
        ("/v1/auth", "auth"),
        ("/.well-known/jwks.json", "auth"),
        ("/v1/tasks", "tasks"),
        ("/v1/tasks/0190f0e6-0000-7000-8000-000000000000", "tasks"),
    ],
)
def test_routes_by_prefix_like_the_ingress(gateway: httpx.Client, path: str, service: str) -> None:
    response = gateway.get(path, params={"a": "1"})
    assert response.json()["service"] == service
    assert response.json()["path"] == path
    assert response.json()["query"] == "a=1"


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/v1/taskset", "/v1/authx", "/"])
def test_does_not_route_what_the_ingress_does_not(gateway: httpx.Client, path: str) -> None:
    response = gateway.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_forwards_method_body_headers_and_sets_forwarded_for(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/v1/tasks", content=b'{"title": "x"}', headers={"authorization": "Bearer t"}
    )
    echoed = response.json()
    assert (echoed["method"], echoed["body"], echoed["authorization"]) == (
        "POST",
        '{"title": "x"}',
        "Bearer t",
    )
    assert echoed["forwarded_for"] == "127.0.0.1"
    assert echoed["forwarded_host"].startswith("127.0.0.1:")
    assert response.headers["x-upstream"] == "tasks"


def test_a_service_that_does_not_answer_is_502() -> None:
    with serve(DevGateway([("/v1/tasks", "http://127.0.0.1:9")])) as base:
        response = httpx.get(f"{base}/v1/tasks")
    assert response.status_code == 502
    assert response.json()["title"] == "Bad Gateway"
