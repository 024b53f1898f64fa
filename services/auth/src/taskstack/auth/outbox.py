"""Transactional outboxes: rows written in the transaction of the change that causes them,
delivered afterwards by a background courier in every replica.

A courier leases a batch with one statement (``FOR UPDATE SKIP LOCKED`` in the
subquery, then pushing ``next_attempt_at`` past the lease): replicas never take
the same row, and no transaction stays open while a row is delivered (an SMTP
server or the tasks service may take seconds). A delivered row is deleted; a
failed one is retried after a backoff that doubles; a replica that dies
mid-delivery leaves its rows to be taken again when the lease ends. Delivery is
therefore at least once, and each receiver must be idempotent.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Column, Interval, Table, bindparam, delete, func, select, update

from taskstack.auth.metrics import OUTBOX_BACKLOG, OUTBOX_DELIVERIES, OUTBOX_OLDEST_AGE
from taskstack.common.db import Database, Statement, execute, fetch_all, fetch_one

logger = logging.getLogger(__name__)

BATCH = 10
MAX_ERROR_LENGTH = 500


class PermanentFailure(Exception):
    """A row that can never be delivered (a recipient the server refuses for good): dropped."""


@dataclass(frozen=True)
class OutboxTable:
    """The statements of one outbox table; ``columns`` (the id first) are what a courier
    delivers, followed by the attempt count."""

    name: str
    lease: Statement
    done: Statement
    retry: Statement
    backlog: Statement

    @classmethod
    def of(cls, table: Table, columns: Sequence[Column[Any]]) -> "OutboxTable":
        c = table.c
        due = (
            select(c.id)
            .where(c.next_attempt_at <= func.now())
            .order_by(c.next_attempt_at)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
        by_id = c.id == bindparam("id")
        return cls(
            name=table.name,
            lease=Statement.of(
                update(table)
                .where(c.id.in_(due.scalar_subquery()))
                .values(
                    attempts=c.attempts + 1,
                    next_attempt_at=func.now() + bindparam("lease", type_=Interval),
                )
                .returning(*columns, c.attempts)
            ),
            done=Statement.of(delete(table).where(by_id)),
            retry=Statement.of(
                update(table)
                .where(by_id)
                .values(
                    last_error=bindparam("error"),
                    next_attempt_at=func.now() + bindparam("delay", type_=Interval),
                )
            ),
            backlog=Statement.of(
                select(func.count(), func.extract("epoch", func.now() - func.min(c.created_at)))
            ),
        )


Deliver = Callable[[tuple[Any, ...]], Awaitable[None]]


@dataclass
class Courier:
    """Delivers one outbox's rows until stopped; ``wake()`` after a commit that added one."""

    database: Database
    table: OutboxTable
    deliver: Deliver
    poll_seconds: float
    lease_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        delay = min(self.retry_base_seconds * 2 ** min(attempts - 1, 30), self.retry_max_seconds)
        return float(delay * random.uniform(0.8, 1.0))  # noqa: S311 - jitter, not crypto

    async def run(self) -> None:
        name = self.table.name
        while True:
            try:
                delivered = await self.round()
                await self.measure()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database is away (or worse): keep the loop alive, try again later.
                logger.warning("outbox round failed", extra={"outbox": name}, exc_info=True)
                delivered = 0
            if delivered < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                self._wake.clear()

    async def round(self) -> int:
        """Lease one batch and deliver it; how many rows were leased."""
        values = {"lease": timedelta(seconds=self.lease_seconds)}
        async with self.database.read() as connection:
            rows = await fetch_all(connection, self.table.lease, values)
        for row in rows:
            await self._deliver_one(row)
        return len(rows)

    async def _deliver_one(self, row: tuple[Any, ...]) -> None:
        name, row_id, attempts = self.table.name, row[0], row[-1]
        try:
            await self.deliver(row[:-1])
        except PermanentFailure as exc:
            OUTBOX_DELIVERIES.labels(name, "dropped").inc()
            logger.error("outbox row dropped", extra={"outbox": name, "error": str(exc)})
        except Exception as exc:
            delay = self.backoff(attempts)
            OUTBOX_DELIVERIES.labels(name, "failed").inc()
            logger.warning(
                "outbox delivery failed; retrying",
                extra={
                    "outbox": name,
                    "attempts": attempts,
                    "retry_in": round(delay, 1),
                    "error": _describe(exc),
                },
            )
            values = {"id": row_id, "error": _describe(exc), "delay": timedelta(seconds=delay)}
            async with self.database.read() as connection:
                await execute(connection, self.table.retry, values)
            return
        else:
            OUTBOX_DELIVERIES.labels(name, "delivered").inc()
        async with self.database.read() as connection:
            await execute(connection, self.table.done, {"id": row_id})

    async def measure(self) -> None:
        async with self.database.read() as connection:
            row = await fetch_one(connection, self.table.backlog, {})
        count, age = row if row else (0, None)
        OUTBOX_BACKLOG.labels(self.table.name).set(count)
        OUTBOX_OLDEST_AGE.labels(self.table.name).set(float(age or 0))


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


@contextlib.asynccontextmanager
async def running(couriers: list[Courier]) -> AsyncIterator[None]:
    """Run ``couriers`` in the background for the length of the block."""
    tasks = [asyncio.create_task(courier.run()) for courier in couriers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
