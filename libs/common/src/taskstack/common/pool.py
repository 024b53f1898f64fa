"""Pool: the connections of one service's Database, made on demand and checked only when needed."""

import asyncio
import contextlib
import select
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection

from taskstack.common.errors import ServiceUnavailable

Connection = AsyncConnection[tuple[Any, ...]]


class Pool:
    """Connections made on demand up to ``limit``, ``keep`` of them kept between requests.

    Hand-written rather than psycopg_pool, whose connections are made by
    background workers that back off after a failure (1, 2, 4, ... s): after a
    database outage, requests would wait out that backoff instead of
    reconnecting the moment the database is back, and during one they would
    queue for the pool's full timeout instead of failing fast. Here a request
    that finds no idle connection makes one itself, bounded by the connect
    timeout, and a failure is the request's own (replayed, or a 503). Waiting
    for a free slot is first come, first served (asyncio's semaphore), and
    bounded by the acquire timeout.

    A pooled connection is checked with a round trip only when it has been idle
    longer than ``check_idle`` seconds (0: always), or when the server has
    sent something while it was idle (a healthy idle connection hears nothing;
    a server that ended it sent why, then closed it). Seeing that costs a poll
    of the socket, not a round trip.
    """

    def __init__(
        self,
        connect: Callable[[float], Awaitable[Connection]],
        *,
        keep: int,
        limit: int,
        acquire_timeout: float,
        connect_timeout: float,
        check: Callable[[Connection, float], Awaitable[None]],
        check_idle: float,
    ):
        self._connect = connect
        self.keep = keep
        self.limit = limit
        self._acquire_timeout = acquire_timeout
        self._connect_timeout = connect_timeout
        self._check = check
        self._check_idle = check_idle
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[tuple[Connection, float]] = []  # and when each was released
        self.open_connections = 0
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self) -> tuple[Connection, bool]:
        """A connection, and whether it is known to be live (new, or just checked)."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._acquire_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise ServiceUnavailable("All database connections are busy.") from None
        else:
            await self._slots.acquire()  # a slot is free, and no one waits before us
        # A live connection (checked, or new) within the connect timeout, in all.
        now = time.monotonic()
        deadline = now + self._connect_timeout
        try:
            while self._idle:
                connection, released = self._idle.pop()  # the most recently used
                if now - released < self._check_idle and not _has_input(connection):
                    return connection, False
                try:
                    await self._check(connection, deadline - time.monotonic())
                except psycopg.Error:
                    await self._discard(connection)
                    continue
                return connection, True
            connection = await self._connect(deadline - time.monotonic())
            self.open_connections += 1
            return connection, True
        except BaseException:
            self._slots.release()
            raise

    async def release(self, connection: Connection) -> None:
        try:
            reusable = (
                not self._closed
                and not connection.broken
                and connection.info.transaction_status is psycopg.pq.TransactionStatus.IDLE
                and len(self._idle) < self.keep
            )
            if reusable:
                self._idle.append((connection, time.monotonic()))
            else:
                await self._discard(connection)
        finally:
            self._slots.release()

    async def _discard(self, connection: Connection) -> None:
        self.open_connections -= 1
        with contextlib.suppress(psycopg.Error):
            await connection.close()

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            await self._discard(self._idle.pop()[0])


def _has_input(connection: Connection) -> bool:
    """Whether the server has sent anything on this idle connection (or closed it)."""
    try:
        readable, _, _ = select.select([connection.pgconn.socket], [], [], 0)
    except (psycopg.Error, OSError, ValueError):
        return True  # no usable socket: let the check find out
    return bool(readable)
