"""A development gateway: routes by path prefix exactly as the Ingress does.

Development tooling only; production routing is the Ingress (or nginx). It
sets X-Forwarded-For / -Proto / -Host like a reverse proxy, streams response
bodies, and answers 404 for paths the Ingress would not route (health and
metrics included) and 502 when a service does not answer.
"""

from collections.abc import Sequence

import httpx
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from taskstack.common.errors import problem_response

# Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection, never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class DevGateway:
    def __init__(self, routes: Sequence[tuple[str, str]]) -> None:
        """``routes``: (path prefix, upstream base URL), e.g. ("/v1/auth", "http://127.0.0.1:8001")."""
        self.routes = sorted(routes, key=lambda route: len(route[0]), reverse=True)
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
                self.client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
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
            await problem_response(404, "No service is routed at this path.")(scope, receive, send)
            return
        body = await _read_body(receive)
        headers = [(k, v) for k, v in Headers(scope=scope).items() if k not in _HOP_BY_HOP]
        client_host = scope["client"][0] if scope.get("client") else ""
        incoming = Headers(scope=scope)
        forwarded_for = ", ".join(filter(None, [incoming.get("x-forwarded-for"), client_host]))
        headers += [
            ("x-forwarded-for", forwarded_for),
            ("x-forwarded-proto", scope.get("scheme", "http")),
            ("x-forwarded-host", incoming.get("host", "")),
        ]
        url = base + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError:
            await problem_response(502, "The service behind this path did not answer.")(
                scope, receive, send
            )
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1"))
                        for k, v in response.headers.multi_items()
                        if k.lower() not in _HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
