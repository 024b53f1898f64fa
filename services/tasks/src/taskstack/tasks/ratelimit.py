"""The per-user request rate limit, shared by every replica without a round trip per request.

Requests are counted per owner in fixed windows of ``WINDOW_SECONDS``, aligned
on the clock (every replica agrees on where a window starts). A request only
touches this process's memory: ``take(owner)`` refuses it when the owner's
count has reached the limit, else counts it. In the background, every
``TASKS_RATE_LIMIT_SYNC_SECONDS``, ``flush()`` adds the counts taken since the
last flush to ``tasks.rate_limit_window`` in one statement and learns, from
the same statement, each of those owners' totals over every replica; from
then on the process counts from those totals.

What another replica admitted is therefore seen one sync late at most, so a
user spread over several replicas can get past the limit by what the other
replicas admit in that time: at most ``(replicas - 1) x (their request rate)
x (sync interval + one flush)`` requests per window, and never more than
``replicas x limit``. When the database cannot be reached, each replica keeps
limiting on its own counts (the limit then holds per replica: fail open
across replicas, never closed), logs once, counts the failure in
``taskstack_tasks_rate_limit_sync_failures_total`` and tries again at the
next sync with the counts it kept.

A fixed window lets a client send up to twice the limit across a window
boundary (the end of one window and the start of the next); that is the
price of one counter per owner and window.
"""

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy import text

from taskstack.common.db import Database, Statement, execute, fetch_all
from taskstack.tasks.errors import RateLimited
from taskstack.tasks.metrics import RATE_LIMIT_SYNC_FAILURES, RATE_LIMITED

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60
# Past windows deleted per statement; a flush purges until a batch comes back short.
PURGE_BATCH = 1000
# The name clients see in RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers).
POLICY = "per-user"

_ADD = Statement.of(
    text(
        """
    INSERT INTO tasks.rate_limit_window AS w (window_start, owner_id, requests)
    SELECT CAST(:window_start AS timestamptz), owner_id, requests
    FROM unnest(CAST(:owners AS uuid[]), CAST(:counts AS integer[])) AS u (owner_id, requests)
    -- Every replica locks the rows it adds to in owner order: two flushes of the same
    -- owners can wait for each other but never deadlock.
    ORDER BY owner_id
    ON CONFLICT (window_start, owner_id) DO UPDATE SET requests = w.requests + excluded.requests
    RETURNING owner_id, requests
    """
    )
)
_PURGE = Statement.of(
    text(
        """
    DELETE FROM tasks.rate_limit_window WHERE (window_start, owner_id) IN (
        SELECT window_start, owner_id FROM tasks.rate_limit_window
        WHERE window_start < CAST(:before AS timestamptz)
        ORDER BY window_start
        LIMIT :batch
        FOR UPDATE SKIP LOCKED)
    """
    )
)


class RateLimit:
    """One process's view of every owner's requests in the current window."""

    def __init__(
        self,
        database: Database,
        *,
        limit: int,
        sync_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.sync_seconds = sync_seconds
        self._database = database
        self._clock = clock
        self._policy = f'"{POLICY}";q={limit};w={WINDOW_SECONDS}'
        self._window_start = 0.0
        self._window_end = 0.0
        # Per owner: what the last flush learned from every replica, plus what this
        # process has counted since (all that take() reads).
        self._used: dict[uuid.UUID, int] = {}
        # Per owner: what this process has counted and not yet flushed.
        self._pending: dict[uuid.UUID, int] = {}
        self._purge_due = False
        self._sync_failing = False
        self._roll(clock())

    def take(self, owner: uuid.UUID) -> None:
        """Count one request of ``owner``; RateLimited when the window's limit is reached.

        Only memory: called on every request, by TaskFront and by the routes' owner
        dependency alike. A refused request is not counted.
        """
        now = self._clock()
        if now >= self._window_end:
            self._roll(now)
        used = self._used.get(owner, 0)
        if used >= self.limit:
            RATE_LIMITED.inc()
            raise self._refusal(now)
        self._used[owner] = used + 1
        self._pending[owner] = self._pending.get(owner, 0) + 1

    def _refusal(self, now: float) -> RateLimited:
        # Retry-After and the RateLimit reset both name the window's end (the draft asks
        # for the same point in time); at least 1, as a client reads 0 as "now".
        seconds = max(1, math.ceil(self._window_end - now))
        return RateLimited(
            seconds,
            {"RateLimit-Policy": self._policy, "RateLimit": f'"{POLICY}";r=0;t={seconds}'},
        )

    def _roll(self, now: float) -> None:
        """Start the window ``now`` falls in: nothing used yet, past windows to purge."""
        self._window_start = now - now % WINDOW_SECONDS
        self._window_end = self._window_start + WINDOW_SECONDS
        self._used = {}
        self._pending = {}
        self._purge_due = True

    async def flush(self) -> None:
        """Share the counts taken since the last flush and learn those owners' totals;
        then purge a batch of past windows when one is due. Never raises for the
        database: its outage leaves each replica limiting on its own counts."""
        now = self._clock()
        if now >= self._window_end:
            self._roll(now)
        window = self._window_start
        batch, self._pending = self._pending, {}
        try:
            if batch:
                await self._share(window, batch)
            if self._purge_due:
                self._purge_due = await self._purge(window) == PURGE_BATCH
        except Exception:  # any failure to reach the database fails open
            if window == self._window_start:
                # Kept for the next flush. A connection lost while the statement ran
                # may have added them already: counted twice errs towards refusing.
                for owner, count in batch.items():
                    self._pending[owner] = self._pending.get(owner, 0) + count
            RATE_LIMIT_SYNC_FAILURES.inc()
            if not self._sync_failing:
                self._sync_failing = True
                logger.warning(
                    "rate-limit counts cannot be shared; each replica limits on its own",
                    exc_info=True,
                )
            return
        if self._sync_failing:
            self._sync_failing = False
            logger.info("rate-limit counts are shared again")

    async def _share(self, window: float, batch: dict[uuid.UUID, int]) -> None:
        owners = sorted(batch)
        values = {
            "window_start": datetime.fromtimestamp(window, UTC),
            "owners": owners,
            "counts": [batch[owner] for owner in owners],
        }
        async with self._database.single_write() as connection:
            totals = await fetch_all(connection, _ADD, values)
        if window != self._window_start:
            return  # the window ended while the statement ran: its totals are moot
        for owner, total in totals:
            # The total includes this batch; what was counted here meanwhile is on top.
            self._used[owner] = max(self._used.get(owner, 0), total + self._pending.get(owner, 0))

    async def _purge(self, window: float) -> int:
        values = {"before": datetime.fromtimestamp(window, UTC), "batch": PURGE_BATCH}
        async with self._database.single_write() as connection:
            return await execute(connection, _PURGE, values)

    @contextlib.asynccontextmanager
    async def sharing(self) -> AsyncIterator[None]:
        """Flush every sync interval while the block runs, and once more when it ends
        (so a replica that stops hands on what it counted)."""
        task = asyncio.create_task(self._flush_forever(), name="rate-limit sync")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with suppress_instrumentation(), contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sync_seconds + 1):
                    await self.flush()

    async def _flush_forever(self) -> None:
        # Background work is no request's: its statements would each start a trace.
        with suppress_instrumentation():
            while True:
                await asyncio.sleep(self.sync_seconds)
                await self.flush()
