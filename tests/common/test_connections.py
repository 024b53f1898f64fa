"""LimitedConnections: past N open connections a problem+json 503 that closes; probes pass."""

import contextlib
import json
import socket
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send

from taskstack.common.admission import Admission
from taskstack.common.connections import LimitedConnections
from tests.support.servers import serve

LIMIT = 3


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def exchange(sock: socket.socket, head: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request head; read one answer (status, headers, the body by Content-Length)."""
    sock.sendall(head)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    raw_head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(status_line.split()[1]), headers, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    return sock.recv(1) == b""


def served_connection(port: int, held: contextlib.ExitStack) -> socket.socket:
    """A connection the server has answered 200 on, kept open. The server may still hold
    a connection just closed (serve()'s own start-up check): until it lets go, a new one
    can be past the limit, so a refused one is replaced, for up to 5 s."""
    deadline = time.monotonic() + 5
    while True:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if exchange(sock, get("/v1/hello"))[0] == 200:
            return held.enter_context(sock)
        sock.close()
        assert time.monotonic() < deadline, "no connection was served within 5 s"
        time.sleep(0.05)


@contextlib.contextmanager
def limited_server(admission: Admission) -> Iterator[int]:
    with serve(admission.wrap(hello), http=LimitedConnections, limit_concurrency=LIMIT) as base_url:
        yield int(base_url.rsplit(":", 1)[1])


def refused_count(service: str) -> float:
    value = REGISTRY.get_sample_value(
        "taskstack_admission_refused_total", {"service": service, "reason": "connection_limit"}
    )
    return value or 0.0


def test_past_the_limit_a_request_gets_a_problem_503_that_closes_and_probes_still_pass() -> None:
    admission = Admission(service="connections", limit=100, queue_limit=0, queue_timeout=0)
    admission.retry_after = 4  # as if chosen under load: the refusal carries it
    before = refused_count("connections")
    with limited_server(admission) as port, contextlib.ExitStack() as held:

        def connect() -> socket.socket:
            return held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))

        open_ones = [served_connection(port, held) for _ in range(LIMIT)]  # served, still open

        extra = connect()
        # Only the head is read: a body announced and never sent is not waited for.
        status, headers, body = exchange(
            extra,
            b"POST /v1/hello HTTP/1.1\r\nHost: test\r\nX-Request-ID: over-1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        )
        assert status == 503
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        assert headers["retry-after"] == "4"
        assert headers["cache-control"] == "no-store"
        assert headers["x-request-id"] == "over-1"
        problem = json.loads(body)
        assert problem["status"] == 503 and problem["request_id"] == "over-1"
        assert closed_by_server(extra)
        assert refused_count("connections") == before + 1

        for path in ("/livez", "/readyz", "/metrics"):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                assert exchange(probe, get(path))[0] == 200, path

        # A connection that goes frees its place for a new one.
        open_ones[0].close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status = exchange(connect(), get("/v1/hello"))[0]
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200


def test_without_an_admission_the_refusal_carries_the_least_retry_after() -> None:
    with (
        serve(hello, http=LimitedConnections, limit_concurrency=1) as base_url,
        contextlib.ExitStack() as held,
    ):
        port = int(base_url.rsplit(":", 1)[1])
        served_connection(port, held)
        second = held.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        status, headers, _ = exchange(second, get("/v1/hello"))
        assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
