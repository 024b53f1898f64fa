"""Admission: a bound on the API requests one process works on, before the framework sees them.

When the CPU is the bottleneck, every request a process accepts beyond what it
can finish in time makes all of them late, and a refusal that has to queue
behind them arrives too late to help. So at most ``limit`` API requests run at
once; past that a short FIFO queue holds at most ``queue_limit`` more, each for
at most ``queue_timeout`` seconds; everything else is refused at once, with a
503 built from pre-encoded bytes: no body read, no routing, no database.
Health and /metrics are never counted nor refused (the kubelet and Prometheus
must see a busy process as alive).

The place a request holds is given back when it ends, whatever the way
(answer, exception, client gone); a part of the app that knows it will only
wait from then on (the sign-in gate's pause) gives it back early through
``scope[PLACE_KEY].give_back()``.
"""

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import cache

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskstack.common.metrics import (
    ADMISSION_ADMITTED,
    ADMISSION_LIMIT,
    ADMISSION_QUEUE_WAIT,
    ADMISSION_REFUSED,
    ADMISSION_RETRY_AFTER,
    INFRASTRUCTURE_PATHS,
)
from taskstack.common.middleware import SECURITY_HEADERS, accepted_request_id, new_request_id
from taskstack.common.settings import ServiceSettings

logger = logging.getLogger("taskstack.admission")

PLACE_KEY = "taskstack.admission"
REFUSAL_REASONS = ("queue_full", "queue_timeout", "connection_limit")
RETRY_AFTER_MAX = 30
# Seconds of admitted and refused counts that Retry-After is chosen from, once a
# second at most, and the most it grows by at a time.
RATE_WINDOW = 3
GROWTH_MAX = 4

_PROBLEM_START = (
    b'{"type":"about:blank","title":"Service Unavailable","status":503,'
    b'"detail":"The service is busy; try again after Retry-After seconds.","request_id":"'
)
_PROBLEM_END = b'"}'


@cache
def _refusal_headers(retry_after: int) -> tuple[tuple[bytes, bytes], ...]:
    headers = {
        "Content-Type": "application/problem+json",
        "Retry-After": str(retry_after),
        **SECURITY_HEADERS,
    }
    return tuple((name.lower().encode(), value.encode()) for name, value in headers.items())


def refusal(
    retry_after: int, request_id: str, *, close: bool = False
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of a refusal: 503 problem+json with Retry-After."""
    body = b"".join((_PROBLEM_START, request_id.encode(), _PROBLEM_END))
    headers = [
        *_refusal_headers(retry_after),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return headers, body


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is a safe one, else a new id."""
    for name, value in headers:
        if name == b"x-request-id":
            return accepted_request_id(value.decode("latin-1"))
    return new_request_id()


class Place:
    """A request's admission place; ``give_back`` frees it once, whoever calls it first."""

    __slots__ = ("_admission", "_held")

    def __init__(self, admission: "Admission") -> None:
        self._admission = admission
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._admission._release()


class Admission:
    """The admission bound of one process, and the ASGI middleware that applies it.

    Built from settings, then wrapped around the app (``wrap``), so the app can
    hold this very instance in its state (the connection bound reads its
    current Retry-After).
    """

    def __init__(
        self,
        *,
        service: str,
        limit: int,
        queue_limit: int,
        queue_timeout: float,
        min_retry_after: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app: ASGIApp | None = None
        self.service = service
        self.limit = limit
        self.queue_limit = queue_limit
        self.queue_timeout = queue_timeout
        self.min_retry_after = min_retry_after
        self.retry_after = min_retry_after
        self.in_progress = 0
        self._waiting: deque[asyncio.Future[bool]] = deque()
        self._clock = clock
        self._second = int(clock())
        self._admitted_per_second = [0] * RATE_WINDOW
        self._refused_per_second = [0] * RATE_WINDOW
        self._chosen_at = clock()
        self._refused_since_log: dict[str, int] = {}
        self._logged_at = -math.inf
        self._admitted = ADMISSION_ADMITTED.labels(service)
        self._refused = {
            reason: ADMISSION_REFUSED.labels(service, reason) for reason in REFUSAL_REASONS
        }
        self._queue_wait = ADMISSION_QUEUE_WAIT.labels(service)
        self._retry_after_gauge = ADMISSION_RETRY_AFTER.labels(service)
        ADMISSION_LIMIT.labels(service).set(limit)
        self._retry_after_gauge.set(self.retry_after)

    @classmethod
    def from_settings(cls, service: str, settings: ServiceSettings) -> "Admission":
        return cls(
            service=service,
            limit=settings.admission_limit,
            queue_limit=settings.admission_queue_limit,
            queue_timeout=settings.admission_queue_timeout_seconds,
            min_retry_after=settings.admission_retry_after_seconds,
        )

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Put this bound in front of ``app`` (a middleware factory for ``add_middleware``)."""
        self.app = app
        return self

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "wrap() an app first"
        if scope["type"] != "http" or scope["path"] in INFRASTRUCTURE_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_progress < self.limit and not self._waiting:
            self.in_progress += 1
        elif reason := await self._queue():
            await self._refuse(reason, scope, send)
            return
        self._count(self._admitted_per_second)
        self._admitted.inc()
        place = Place(self)
        scope[PLACE_KEY] = place
        try:
            await self.app(scope, receive, send)
        finally:
            place.give_back()

    async def _queue(self) -> str | None:
        """Wait in line for a place; the reason for a refusal, or None with a place held."""
        if len(self._waiting) >= self.queue_limit:
            return "queue_full"
        loop = asyncio.get_running_loop()
        started = loop.time()
        place: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(place)
        timer = loop.call_later(self.queue_timeout, _expire, place)
        try:
            admitted = await place
        except asyncio.CancelledError:
            # Handed a place in the same turn as cancelled: it must not leak.
            if place.done() and not place.cancelled() and place.result():
                self._release()
            raise
        finally:
            timer.cancel()
            if place in self._waiting:  # not handed a place: out of the line
                self._waiting.remove(place)
        if not admitted:
            return "queue_timeout"
        self._queue_wait.observe(loop.time() - started)
        return None

    def _release(self) -> None:
        # The place goes straight to the first one waiting, so nobody arriving
        # later can take it first (FIFO).
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_progress -= 1

    async def _refuse(self, reason: str, scope: Scope, send: Send) -> None:
        retry_after = self.note_refusal(reason)
        headers, body = refusal(retry_after, request_id_of(scope["headers"]))
        start: Message = {"type": "http.response.start", "status": 503, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def note_refusal(self, reason: str) -> int:
        """Count a refusal (also the connection bound's); the Retry-After to answer it with."""
        self._refused[reason].inc()
        self._count(self._refused_per_second)
        now = self._clock()
        if now - self._chosen_at >= 1:
            self._choose_retry_after(now)
        self._refused_since_log[reason] = self._refused_since_log.get(reason, 0) + 1
        if now - self._logged_at >= 1:
            self._log_shedding(now)
        return self.retry_after

    def _choose_retry_after(self, now: float) -> None:
        # Clients that honour Retry-After come back spread over one to two times
        # it: waiting k times longer makes them come back k times less often. The
        # goal is returns of at most an eighth of what is admitted, so retries
        # never become the load that causes the refusals (a retry storm). The
        # refusals counted were answered with the Retry-After of their time, so
        # the new one scales the current one; by at most x4 or /2 a second, since
        # the counts answer a change only after one Retry-After (a jump on stale
        # counts would overshoot). While refusals are few, it comes back down to
        # the minimum, so clients never wait longer than they need.
        self._count(self._refused_per_second, 0)  # drop seconds that have passed
        refused = sum(self._refused_per_second)
        admitted = sum(self._admitted_per_second)
        factor = 8 * refused / admitted if admitted else GROWTH_MAX
        factor = min(max(factor, 1 / 2), GROWTH_MAX)
        wanted = math.ceil(self.retry_after * factor)
        self.retry_after = max(self.min_retry_after, min(wanted, RETRY_AFTER_MAX))
        self._retry_after_gauge.set(self.retry_after)
        self._chosen_at = now

    def _count(self, per_second: list[int], amount: int = 1) -> None:
        second = int(self._clock())
        if second != self._second:
            for passed in range(
                self._second + 1, self._second + 1 + min(second - self._second, RATE_WINDOW)
            ):
                self._admitted_per_second[passed % RATE_WINDOW] = 0
                self._refused_per_second[passed % RATE_WINDOW] = 0
            self._second = second
        per_second[second % RATE_WINDOW] += amount

    def _log_shedding(self, now: float) -> None:
        logger.warning(
            "shedding load",
            extra={
                "refused": self._refused_since_log,
                "in_progress": self.in_progress,
                "queued": len(self._waiting),
                "limit": self.limit,
                "retry_after": self.retry_after,
            },
        )
        self._refused_since_log = {}
        self._logged_at = now


def _expire(place: asyncio.Future[bool]) -> None:
    if not place.done():
        place.set_result(False)
