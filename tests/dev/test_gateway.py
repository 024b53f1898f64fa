"""The development gateway routes by prefix like the Ingress and forwards like nginx."""

import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import anyio.to_thread
import httpx
import pytest
from sqlalchemy.engine import URL
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from taskstack.dev.gateway import SERVER_OPTIONS, DevGateway
from taskstack.dev.services import SERVICES
from taskstack.tasks.main import create_app
from tests.support.servers import serve
from tests.support.tokens import TokenMint
from tests.tasks.conftest import jwks_app, tasks_settings

PROBLEM = "application/problem+json"
# How long an upstream or a client waits for the other side of a streaming test,
# so that a gateway that buffers fails the test instead of hanging it.
HANDSHAKE_TIMEOUT = 10.0

# Set by one side of a streaming test and awaited by the other, by test-chosen key.
signals: defaultdict[str, threading.Event] = defaultdict(threading.Event)


def echo_app(name: str) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        headers = dict(request.headers)
        response = JSONResponse(
            {
                "service": name,
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "body": (await request.body()).decode(),
                "headers": headers,
                "raw_header_names": [n.decode("latin-1") for n, _ in request.scope["headers"]],
            },
            headers={"x-upstream": name},
        )
        if "x-foo" in headers:  # latin-1, as Starlette decodes header bytes
            response.raw_headers.append((b"x-foo-echo", headers["x-foo"].encode("latin-1")))
        return response

    async def stream_in(request: Request) -> JSONResponse:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            signals[request.path_params["key"]].set()
        return JSONResponse({"received": received})

    async def stream_out(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first,"
            read = await _wait_for(request.path_params["key"])
            yield b"then the rest" if read else b"the client never read the first part"

        return StreamingResponse(body(), media_type="text/plain")

    async def slow(request: Request) -> Response:
        await _wait_for(request.path_params["key"])
        return Response("late")

    return Starlette(
        routes=[
            Route("/v1/tasks/stream-in/{key}", stream_in, methods=["POST"]),
            Route("/v1/tasks/stream-out/{key}", stream_out),
            Route("/v1/tasks/slow/{key}", slow),
            Route("/{path:path}", echo, methods=["GET", "POST", "DELETE"]),
        ]
    )


async def _wait_for(key: str) -> bool:
    return await anyio.to_thread.run_sync(signals[key].wait, HANDSHAKE_TIMEOUT)


def routes_to(upstreams: dict[str, str]) -> list[tuple[str, str]]:
    return [(prefix, upstreams[s.name]) for s in SERVICES for prefix in s.prefixes]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, str]]:
    with serve(echo_app("auth")) as auth, serve(echo_app("tasks")) as tasks:
        yield {"auth": auth, "tasks": tasks}


@pytest.fixture(scope="module")
def gateway_url(upstreams: dict[str, str]) -> Iterator[str]:
    with serve(DevGateway(routes_to(upstreams)), **SERVER_OPTIONS) as base:
        yield base


@pytest.fixture
def gateway(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
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
    assert response.headers["content-type"] == PROBLEM
    assert len(response.headers.get_list("date")) == 1


def test_forwards_method_body_and_headers(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/v1/tasks", content=b'{"title": "x"}', headers={"authorization": "Bearer t"}
    )
    echoed = response.json()
    assert (echoed["method"], echoed["body"]) == ("POST", '{"title": "x"}')
    assert echoed["headers"]["authorization"] == "Bearer t"
    assert echoed["headers"]["content-length"] == "14"
    assert response.headers["x-upstream"] == "tasks"


def test_passes_the_clients_host_and_says_where_the_request_came_from(
    gateway: httpx.Client, gateway_url: str
) -> None:
    response = gateway.get(
        "/v1/tasks",
        headers={
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-host": "evil.example",
            "x-forwarded-proto": "https",
            "forwarded": "for=203.0.113.7",
            "x-real-ip": "203.0.113.7",
        },
    )
    headers = response.json()["headers"]
    origin = gateway_url.removeprefix("http://")
    assert headers["host"] == origin
    # A client's own claims are discarded, as nginx discards them.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == origin
    assert headers["x-forwarded-proto"] == "http"
    assert "forwarded" not in headers and "x-real-ip" not in headers
    named = gateway.get("/v1/tasks", headers={"host": "api.example:8443"}).json()["headers"]
    assert (named["host"], named["x-forwarded-host"]) == ("api.example:8443", "api.example:8443")


def test_adds_no_header_the_client_did_not_send(gateway: httpx.Client) -> None:
    sent = [(b"Host", gateway.base_url.netloc), (b"X-Only", b"this")]
    request = httpx.Request("GET", gateway.base_url.join("/v1/tasks"), headers=sent)
    names = gateway.send(request).json()["raw_header_names"]
    assert sorted(names) == sorted(
        ["host", "x-only", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
    )


def test_drops_hop_by_hop_headers_and_those_connection_names(gateway: httpx.Client) -> None:
    response = gateway.get(
        "/v1/tasks",
        headers={"connection": "keep-alive, x-hop", "x-hop": "1", "te": "trailers", "x-end": "2"},
    )
    headers = response.json()["headers"]
    assert "x-hop" not in headers and "te" not in headers and "connection" not in headers
    assert headers["x-end"] == "2"


def test_passes_header_bytes_unchanged_both_ways(gateway: httpx.Client) -> None:
    response = gateway.get("/v1/tasks", headers={b"X-Foo": "é".encode()})
    assert response.status_code == 200
    assert response.json()["headers"]["x-foo"] == "é".encode().decode("latin-1")
    assert (b"x-foo-echo", "é".encode()) in response.headers.raw


def test_the_services_date_and_server_pass_once(gateway: httpx.Client) -> None:
    response = gateway.get("/v1/tasks")
    assert response.headers.get_list("server") == ["uvicorn"]
    assert len(response.headers.get_list("date")) == 1


def test_streams_the_request_body_as_it_arrives(gateway: httpx.Client) -> None:
    seen_before_the_rest: list[bool] = []

    def body() -> Iterator[bytes]:
        yield b"x" * 65536
        # A gateway that read the whole body first would not have passed this on yet.
        seen_before_the_rest.append(signals["in"].wait(HANDSHAKE_TIMEOUT))
        for _ in range(15):
            yield b"x" * 65536

    response = gateway.post("/v1/tasks/stream-in/in", content=body())
    assert response.json() == {"received": 16 * 65536}
    assert seen_before_the_rest == [True]


def test_streams_the_response_body_as_it_comes(gateway: httpx.Client) -> None:
    with gateway.stream("GET", "/v1/tasks/stream-out/out") as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"first,"
        signals["out"].set()
        assert b"".join(chunks) == b"then the rest"


def test_a_service_that_answers_too_late_is_504(upstreams: dict[str, str]) -> None:
    impatient = DevGateway(routes_to(upstreams), timeout=httpx.Timeout(0.5))
    with serve(impatient, **SERVER_OPTIONS) as base:
        try:
            response = httpx.get(f"{base}/v1/tasks/slow/late")
        finally:
            signals["late"].set()
    assert response.status_code == 504
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["title"] == "Gateway Timeout"


def test_a_service_that_does_not_answer_is_502() -> None:
    with serve(DevGateway([("/v1/tasks", "http://127.0.0.1:9")]), **SERVER_OPTIONS) as base:
        response = httpx.get(f"{base}/v1/tasks")
    assert response.status_code == 502
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["title"] == "Bad Gateway"


# In front of the real tasks service.


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture(scope="module")
def tasks_gateway(migrated_database: URL, mint: TokenMint) -> Iterator[str]:
    with serve(jwks_app(mint)) as jwks:
        settings = tasks_settings(migrated_database, f"{jwks}/.well-known/jwks.json")
        with (
            serve(create_app(settings)) as tasks,
            serve(DevGateway([("/v1/tasks", tasks)]), **SERVER_OPTIONS) as base,
        ):
            yield base


def test_a_trailing_slash_redirects_to_the_gateways_origin(tasks_gateway: str) -> None:
    response = httpx.get(f"{tasks_gateway}/v1/tasks/?limit=5")
    assert response.status_code == 307
    assert response.headers["location"] == f"{tasks_gateway}/v1/tasks?limit=5"
    followed = httpx.get(f"{tasks_gateway}/v1/tasks/", follow_redirects=True)
    assert followed.status_code == 401
    assert followed.url == f"{tasks_gateway}/v1/tasks"


def test_a_non_ascii_idempotency_key_is_the_services_422(
    tasks_gateway: str, mint: TokenMint
) -> None:
    headers = {
        b"Authorization": f"Bearer {mint.token()}".encode(),
        b"Idempotency-Key": "café".encode(),
    }
    response = httpx.post(f"{tasks_gateway}/v1/tasks", json={"title": "t"}, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"] == ["header", "Idempotency-Key"]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_too_large_gets_the_services_413(tasks_gateway: str, framing: str) -> None:
    chunk = b"x" * 1_048_576
    body: bytes | Iterator[bytes] = chunk * 20
    if framing == "chunked":
        body = iter([chunk] * 20)
    response = httpx.post(
        f"{tasks_gateway}/v1/tasks",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM
