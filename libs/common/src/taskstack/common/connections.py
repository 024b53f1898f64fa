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

It also answers admission's immediate refusals (no place free, the queue
full) as the request's head completes, within the read that brought it:
under overload most requests are those, and an asyncio task, a turn of the
event loop and the whole ASGI stack per refusal were most of what a refusal
cost, and made it wait behind everything else in the loop.

Run it with ``uvicorn --http taskstack.common.connections:LimitedConnections
--limit-concurrency N``.
"""

import asyncio
import weakref
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
        if not _is_probe(cycle.scope):
            limit = self.connection_limit
            # Unlike uvicorn's check, this connection is one of the N allowed.
            if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
                app = _refusal(_admission_of(self.app), "connection_limit", close=True)
            elif self._refused_at_once(cycle):
                return
        super()._start_asgi_task(cycle, app)

    def _refused_at_once(self, cycle: RequestResponseCycle) -> bool:
        """Answer admission's immediate refusal here, without a task, when the answer
        can be written at once (the transport is not holding writes back)."""
        admission = _admission_of(self.app)
        if (
            admission is None
            or cycle.flow.write_paused
            or cycle.scope["path"] in INFRASTRUCTURE_PATHS
            or not admission.refuses_at_once()
        ):
            return False
        answer = cycle.run_asgi(_refusal(admission, "queue_full", close=False))
        try:
            # Nothing in it waits while the transport takes writes: it runs to its end.
            answer.send(None)
        except StopIteration:
            return True
        answer.close()
        self.transport.close()
        return True


def _refusal(admission: Admission | None, reason: str, *, close: bool) -> ASGI3Application:
    """An ASGI app answering admission's 503, counted under ``reason``."""

    async def refuse(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        assert scope["type"] == "http"
        retry_after = admission.note_refusal(reason) if admission else 1
        headers, body = refusal(retry_after, request_id_of(scope["headers"]), close=close)
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return refuse


def _is_probe(scope: Scope) -> bool:
    return scope.get("method") in ("GET", "HEAD") and scope.get("path") in INFRASTRUCTURE_PATHS


_ADMISSIONS: "weakref.WeakKeyDictionary[object, Admission | None]" = weakref.WeakKeyDictionary()


def _admission_of(app: object) -> Admission | None:
    """The service's Admission (``app.state.admission``), under the server's wrappers."""
    try:
        return _ADMISSIONS[app]
    except KeyError:
        admission = _ADMISSIONS[app] = _search_admission(app)
        return admission


def _search_admission(app: object) -> Admission | None:
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
