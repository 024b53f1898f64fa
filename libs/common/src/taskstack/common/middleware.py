"""The pure-ASGI middleware every service runs (outermost first).

- RequestHandling: what every request needs, in one layer (each layer wraps
  every request and every message of it):

  - a request id, the baseline security headers, the request metrics and
    access log, and the catch-all 500 (so even that answer carries the id);
  - the caller's trace context (`traceparent`) made current even when this
    process traces nothing, so that its log lines carry the caller's trace id;
  - 413 before a body is parsed (Starlette's limiter answers in text/plain,
    which would be the one non-problem error);
  - replaying the whole request, and so its whole transaction, after a
    transient database failure, within a time budget; 503 when they persist.

- HeadMiddleware: HEAD on every GET route.
"""

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable
from contextvars import Token

from opentelemetry import context, propagate, trace
from prometheus_client import Histogram
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskstack.common.db import is_transient
from taskstack.common.errors import problem_response
from taskstack.common.logging import request_id_var
from taskstack.common.metrics import (
    DB_TRANSIENT_RETRIES,
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS_IN_PROGRESS,
    INFRASTRUCTURE_PATHS,
    UNMATCHED_ROUTE,
    method_label,
)

logger = logging.getLogger("taskstack.request")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def new_request_id() -> str:
    """32 random hex digits (a request id only needs to be unique, not a UUID)."""
    return os.urandom(16).hex()


def accepted_request_id(incoming: str) -> str:
    """The client's X-Request-ID when it is a safe one (it reaches logs and answers),
    else a new id."""
    return incoming if _REQUEST_ID.fullmatch(incoming) else new_request_id()


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # API answers carry tokens and personal data: no shared or browser cache
    # keeps them unless a route says otherwise (the JWKS does).
    "Cache-Control": "no-store",
}


class RequestHandling:
    """Request id, security headers, metrics, access log, body limit and replay.

    A replay happens only before the response has started, at most
    ``attempts`` times and never past ``budget`` seconds in all, so a
    database outage still answers fast. The body is recorded as the first
    attempt reads it (bounded by the body limit) and replayed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        access_log: bool,
        max_body_bytes: int,
        attempts: int,
        budget: float,
    ) -> None:
        self.app = app
        self.service = service
        self.access_log = access_log
        self.max_body_bytes = max_body_bytes
        self.attempts = attempts
        self.budget = budget
        self.in_progress = HTTP_REQUESTS_IN_PROGRESS.labels(service)
        self._durations: dict[tuple[str, str, int], Histogram] = {}
        self.retries = DB_TRANSIENT_RETRIES.labels(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming, declared = _request_id_and_length(scope)
        request_id = accepted_request_id(incoming)
        token = request_id_var.set(request_id)
        callers_trace = _continue_callers_trace(scope)
        started = time.perf_counter()
        status = 500
        response_started = False
        api_request = scope["path"] not in INFRASTRUCTURE_PATHS
        if api_request:
            self.in_progress.inc()

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = _with_our_headers(message.get("headers", ()), request_id)
            await send(message)

        try:
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await problem_response(413, self._too_large())(scope, receive, send_with_headers)
            else:
                await self._attempts(scope, receive, send_with_headers, lambda: response_started)
        except Exception:
            logger.exception("unhandled error")
            if response_started:
                raise
            await problem_response(500, "An unexpected error occurred.")(
                scope, receive, send_with_headers
            )
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else UNMATCHED_ROUTE
            if api_request:
                self.in_progress.dec()
                self._observe(scope["method"], template, status, duration)
            if self.access_log:
                logger.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "route": template,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                    },
                )
            if callers_trace is not None:
                context.detach(callers_trace)
            request_id_var.reset(token)

    async def _attempts(
        self, scope: Scope, receive: Receive, send: Send, response_started: Callable[[], bool]
    ) -> None:
        """Run the request; replay it after a transient database failure."""
        deadline = time.monotonic() + self.budget
        original_scope = dict(scope)
        recorded: list[Message] = []
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # An HTTPException passes FastAPI's body reader untouched.
                    raise HTTPException(413, self._too_large())
                recorded.append(message)
            return message

        attempt_receive: Receive = limited_receive
        for attempt in range(1, self.attempts + 1):
            try:
                await self.app(scope, attempt_receive, send)
                return
            except Exception as exc:
                if response_started() or not is_transient(exc):
                    raise
                delay = random.uniform(0, 0.05 * 2**attempt)  # noqa: S311 - jitter, not crypto
                if attempt == self.attempts or time.monotonic() + delay > deadline:
                    logger.warning("database unavailable", extra={"attempts": attempt})
                    await problem_response(
                        503,
                        "The database is unavailable; try again shortly.",
                        headers={"Retry-After": "1"},
                    )(scope, receive, send)
                    return
                logger.info("retrying after a transient database error", extra={"attempt": attempt})
                self.retries.inc()
                await asyncio.sleep(delay)
                # Routing mutates the scope in place; start the replay from the original.
                scope.clear()
                scope.update(original_scope)
                attempt_receive = replay(recorded, limited_receive)

    def _too_large(self) -> str:
        return f"The request body is larger than {self.max_body_bytes} bytes."

    def _observe(self, method: str, route: str, status: int, duration: float) -> None:
        key = (route, method_label(method), status)
        histogram = self._durations.get(key)
        if histogram is None:
            # labels() takes a lock and builds its key on every call: once per route,
            # method and status is enough (a bounded set: routes are templates).
            histogram = self._durations[key] = HTTP_REQUEST_DURATION.labels(self.service, *key)
        context = trace.get_current_span().get_span_context()
        if context.is_valid and context.trace_flags.sampled:
            histogram.observe(duration, exemplar={"trace_id": format(context.trace_id, "032x")})
        else:
            histogram.observe(duration)


_SECURITY_RAW = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1"))
    for name, value in SECURITY_HEADERS.items()
)


def _with_our_headers(
    headers: Iterable[tuple[bytes, bytes]], request_id: str
) -> list[tuple[bytes, bytes]]:
    """The response's headers with the request id (replacing one the app set) and every
    security header the app did not set itself."""
    raw: list[tuple[bytes, bytes]] = []
    present: set[bytes] = set()
    for name, value in headers:
        if name == b"x-request-id":
            continue
        raw.append((name, value))
        present.add(name)
    raw.append((b"x-request-id", request_id.encode("latin-1")))
    raw.extend(header for header in _SECURITY_RAW if header[0] not in present)
    return raw


def _continue_callers_trace(scope: Scope) -> Token[context.Context] | None:
    """Make the caller's trace context current when no span of ours carries it already.

    With tracing on, OpenTelemetry's server span continues the caller's trace
    and is current here. With tracing off (no exporter configured) nothing
    reads `traceparent`, and the log lines of a request that came with one would
    carry no trace id: correlating them with the caller's trace must not depend
    on this process exporting spans. The extracted context is the caller's span,
    not recording, so the log lines carry the caller's trace and span ids.
    """
    if trace.get_current_span().get_span_context().is_valid:
        return None
    headers = scope["headers"]
    if not any(name == b"traceparent" for name, _ in headers):
        return None
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
    # The configured propagators (OTEL_PROPAGATORS; W3C trace context by default).
    return context.attach(propagate.extract(carrier))


def _request_id_and_length(scope: Scope) -> tuple[str, str | None]:
    """The first X-Request-ID and Content-Length of the request, in one pass."""
    request_id: str | None = None
    length: str | None = None
    for name, value in scope["headers"]:
        if name == b"x-request-id" and request_id is None:
            request_id = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value.decode("latin-1")
    return request_id or "", length


def replay(messages: list[Message], then: Receive) -> Receive:
    """Serve the body chunks read so far, then continue with the live stream."""
    pending = list(messages)

    async def replay_receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return replay_receive


class HeadMiddleware:
    """HEAD on every GET route (RFC 9110 §9.3.2): GET's status and headers, no body.

    FastAPI's routes serve only the methods they name, so HEAD is answered here,
    once, by running the request as GET and dropping the body. The scope is
    changed in place rather than copied: the middleware around this one reads
    the matched route from it, and the server reads the method from it when the
    answer starts, by which time it says HEAD again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.start":
                scope["method"] = "HEAD"
            elif message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        scope["method"] = "GET"
        try:
            await self.app(scope, receive, send_without_body)
        finally:
            scope["method"] = "HEAD"
