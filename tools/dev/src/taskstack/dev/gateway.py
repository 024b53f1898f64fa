"""A development gateway: routes by path prefix and forwards as the nginx Ingress does.

Development tooling only; production routing is the Ingress. It forwards the way
the end-to-end suite's nginx does (tests/e2e/gateway.py):

- The client's Host reaches the service unchanged, with X-Forwarded-For (the
  address the connection came from; whatever a client sent is discarded),
  X-Forwarded-Proto and X-Forwarded-Host. Every URL a service builds therefore
  points at the gateway's origin, never at the service's own port.
- No path is rewritten, so a trailing slash is the service's to answer, the
  same behind this gateway as behind nginx: `/v1/tasks/` (or
  `/v1/tasks/{id}/`) gets a 307, which keeps the method and the body, to the
  path without the slash at the origin the client used, query kept:
  `GET http://127.0.0.1:8000/v1/tasks/?limit=5` → `http://127.0.0.1:8000/v1/tasks?limit=5`.
- Header bytes pass unchanged both ways; only hop-by-hop headers (RFC 9110
  §7.6.1) stop here. The service's Date and Server pass once: the gateway's
  server adds none of its own (serve it with SERVER_OPTIONS).
- Request and response bodies stream both ways; neither is read whole.
- Its own answers are problem+json: 404 for a path the Ingress does not route
  (health and metrics included), 502 when the service does not answer
  (connection refused or dropped), 504 when it answers too late.
"""

from collections.abc import AsyncIterator, Iterable, Sequence
from email.utils import formatdate
from typing import TypedDict

import httpx
from starlette.types import Receive, Scope, Send

from taskstack.common.errors import problem_response

RawHeaders = list[tuple[bytes, bytes]]

# Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection, never forwarded.
# Expect too: the gateway's own server answers a client's 100-continue.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"expect",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The gateway alone says where a request came from, as nginx does.
_FORWARDING = frozenset(
    {b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-real-ip"}
)

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class ServerOptions(TypedDict):
    server_header: bool
    date_header: bool
    proxy_headers: bool


# How uvicorn must serve the gateway: no Date or Server of its own on top of the
# service's, and the peer's address taken as it is (a client's X-Forwarded-For
# is not believed).
SERVER_OPTIONS = ServerOptions(server_header=False, date_header=False, proxy_headers=False)


class DevGateway:
    def __init__(
        self, routes: Sequence[tuple[str, str]], *, timeout: httpx.Timeout = DEFAULT_TIMEOUT
    ) -> None:
        """``routes``: (path prefix, upstream base URL), e.g. ("/v1/auth", "http://127.0.0.1:8001").

        ``timeout``: to connect, and between two reads or writes, before a 504.
        """
        self.routes = sorted(routes, key=lambda route: len(route[0]), reverse=True)
        self.timeout = timeout
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._proxy(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # No proxy from the environment: the services are on loopback.
                self.client = httpx.AsyncClient(trust_env=False)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def upstream(self, path: str) -> str | None:
        for prefix, base in self.routes:
            if path == prefix or path.startswith(prefix + "/"):
                return base
        return None

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.client is not None, "the gateway serves only after its lifespan started"
        base = self.upstream(scope["path"])
        if base is None:
            await _problem(404, "No service is routed at this path.", scope, receive, send)
            return
        url = base + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        framing = (b"content-length", b"transfer-encoding")
        has_body = any(name in framing for name, _ in scope["headers"])
        # Built directly rather than with client.build_request, which would add the
        # client's default headers (User-Agent, Accept-Encoding) the client never sent.
        request = httpx.Request(
            scope["method"],
            url,
            headers=_request_headers(scope),
            content=_request_body(receive) if has_body else None,
            extensions={"timeout": self.timeout.as_dict()},
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            detail = "The service behind this path did not answer in time."
            await _problem(504, detail, scope, receive, send)
            return
        except httpx.HTTPError:
            detail = "The service behind this path did not answer."
            await _problem(502, detail, scope, receive, send)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _end_to_end(response.headers.raw),
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


def _request_headers(scope: Scope) -> RawHeaders:
    incoming: RawHeaders = scope["headers"]
    headers = [(name, value) for name, value in _end_to_end(incoming) if name not in _FORWARDING]
    host = next((value for name, value in incoming if name == b"host"), b"")
    if client := scope.get("client"):
        headers.append((b"x-forwarded-for", client[0].encode("latin-1")))
    headers += [
        (b"x-forwarded-proto", scope["scheme"].encode("latin-1")),
        (b"x-forwarded-host", host),
    ]
    return headers


def _end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """The headers without the hop-by-hop ones, those the Connection header names included."""
    headers = [(name.lower(), value) for name, value in headers]
    named = {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }
    return [(name, value) for name, value in headers if name not in _HOP_BY_HOP | named]


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if body := message.get("body", b""):
            yield body
        if not message.get("more_body", False):
            return


async def _problem(status: int, detail: str, scope: Scope, receive: Receive, send: Send) -> None:
    # The gateway's server adds no Date (SERVER_OPTIONS), so its own answers carry one.
    headers = {"Date": formatdate(usegmt=True)}
    await problem_response(status, detail, headers=headers)(scope, receive, send)
