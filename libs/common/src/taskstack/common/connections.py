"""LimitedConnections: uvicorn's bound on open connections, answering as the services do.

Each open connection costs memory whether or not it sends anything, so the
number a process holds is bounded too (``--limit-concurrency``), well above
what admission lets work. uvicorn's own check answers that bound with a
plain-text 503, logs every refusal and refuses health probes as well. This
protocol keeps uvicorn's HTTP implementation and replaces only that answer:
past the bound, a request gets the same problem+json 503 as an admission
refusal, with ``Connection: close`` so that the connection goes, answered from
its head alone (no body read). ``GET`` /livez, /readyz and /metrics are still
served: the kubelet must never see a refusal, nor Prometheus miss the reason.

Run it with ``uvicorn --http taskstack.common.connections:LimitedConnections
--limit-concurrency N``.
"""

import asyncio
from typing import Any

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from taskstack.common.admission import Admission, refusal, request_id_of
from taskstack.common.metrics import INFRASTRUCTURE_PATHS

# How deep the server's wrappers (proxy headers, message logger) may hide the app.
_WRAPPERS_SEARCHED = 8


class LimitedConnections(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn's check stays off; _start_asgi_task applies the same bound.
        self.connection_limit = self.limit_concurrency
        self.limit_concurrency = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        limit = self.connection_limit
        if (
            limit is not None
            # Unlike uvicorn's check, this connection is one of the N allowed.
            and (len(self.connections) > limit or len(self.tasks) >= limit)
            and not _is_probe(cycle.scope)
        ):
            app = self._refuse
        super()._start_asgi_task(cycle, app)

    async def _refuse(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        assert scope["type"] == "http"
        admission = _admission_of(self.app)
        retry_after = admission.note_refusal("connection_limit") if admission else 1
        headers, body = refusal(retry_after, request_id_of(scope["headers"]), close=True)
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _is_probe(scope: Scope) -> bool:
    return scope.get("method") in ("GET", "HEAD") and scope.get("path") in INFRASTRUCTURE_PATHS


def _admission_of(app: object) -> Admission | None:
    """The service's Admission (``app.state.admission``), under the server's wrappers."""
    for _ in range(_WRAPPERS_SEARCHED):
        if isinstance(app, Admission):
            return app
        admission = getattr(getattr(app, "state", None), "admission", None)
        if isinstance(admission, Admission):
            return admission
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
