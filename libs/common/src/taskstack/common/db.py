"""The database: engine and pool from settings, the request-scoped session, transient errors."""

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from sqlalchemy import NullPool, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from taskstack.common.errors import ServiceUnavailable
from taskstack.common.metrics import DB_CONNECTION_ERRORS, DB_POOL_WAIT, POOLS
from taskstack.common.settings import ServiceSettings

logger = logging.getLogger(__name__)


class DatabaseUnreachable(RuntimeError):
    """The database did not answer within the start-up window."""


def is_transient(exc: BaseException) -> bool:
    """A failure that a fresh attempt of the whole transaction may not meet again.

    Serialization failures, deadlocks and lost or refused connections are; a
    statement timeout is not (the same statement would time out again).
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    return isinstance(exc.orig, psycopg.OperationalError) and not isinstance(
        exc.orig, psycopg.errors.QueryCanceled
    )


def _commit_outcome_unknown(exc: DBAPIError) -> bool:
    # A serialization failure or deadlock at COMMIT means "rolled back"; a lost
    # connection leaves it open whether the COMMIT reached the server.
    if isinstance(exc.orig, psycopg.errors.TransactionRollback):
        return False
    return exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError)


class Database:
    """One service's connection pool, built from its settings; connects lazily."""

    def __init__(self, settings: ServiceSettings, *, service: str):
        self.service = service
        connect_args: dict[str, Any] = {
            "connect_timeout": settings.database_connect_timeout,
            "application_name": f"taskstack-{service}",
        }
        if settings.uses_transaction_pooler:
            # A transaction-mode pooler (PgBouncer, Neon's pooled endpoint) hands
            # each transaction to any server connection: no prepared statements.
            connect_args["prepare_threshold"] = None
        self.engine: AsyncEngine = create_async_engine(
            settings.database,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            pool_pre_ping=settings.database_pool_pre_ping,
            connect_args=connect_args,
        )
        # Readiness and start-up open their own short-lived connection, so they
        # report whether the database answers, not whether the pool has room.
        self._probe_engine = create_async_engine(
            settings.database, poolclass=NullPool, connect_args=connect_args
        )
        # SQLAlchemy's asyncio pool lets a newcomer take a returned connection
        # ahead of tasks already waiting, which starves some of them under load;
        # this FIFO semaphore makes waiting fair and bounds it.
        self._max_connections = settings.database_pool_size + settings.database_max_overflow
        self._slots = asyncio.Semaphore(self._max_connections)
        self._acquire_timeout = settings.database_pool_timeout
        self._connect_timeout = settings.database_connect_timeout
        self._startup_timeout = settings.database_startup_timeout
        self.readiness_timeout = settings.readiness_timeout
        self._wait = DB_POOL_WAIT.labels(service)
        connection_errors = DB_CONNECTION_ERRORS.labels(service)

        @event.listens_for(self.engine.sync_engine, "handle_error")
        def _count_connection_errors(context: ExceptionContext) -> None:
            if context.is_disconnect or context.connection is None:
                connection_errors.inc()

        POOLS.databases.add(self)

    def pool_stats(self) -> dict[str, float]:
        pool = self.engine.pool
        return {
            "size": float(pool.size()),  # type: ignore[attr-defined]
            "checked_out": float(pool.checkedout()),  # type: ignore[attr-defined]
            "overflow": float(max(pool.overflow(), 0)),  # type: ignore[attr-defined]
            "limit": float(self._max_connections),
        }

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._acquire_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise ServiceUnavailable("All database connections are busy.") from None
        finally:
            self._wait.observe(time.perf_counter() - started)
        try:
            yield
        finally:
            self._slots.release()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on any error."""
        async with self._slot(), AsyncSession(self.engine, expire_on_commit=False) as session:
            await self._within_connect_timeout(session.connection())
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await _commit(session)

    @asynccontextmanager
    async def connection(self, *, autocommit: bool = False) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a transaction that commits on success, rolls back on any error.

        Cheaper than a session for code that needs no ORM. With ``autocommit``
        every statement is its own transaction: a request that runs one
        statement saves the BEGIN and COMMIT round trips (on the tasks list
        these were about a third of the time spent per request).
        """
        async with self._slot():
            connection = self.engine.connect()
            await self._within_connect_timeout(connection.start())
            try:
                if autocommit:
                    await connection.execution_options(isolation_level="AUTOCOMMIT")
                try:
                    yield connection
                except BaseException:
                    await connection.rollback()
                    raise
                await _commit(connection)
            finally:
                await connection.close()

    async def _within_connect_timeout(self, checkout: Coroutine[Any, Any, Any]) -> None:
        """Get a connection (pre-ping, or a new connect) within the connect timeout.

        A database that takes bytes and never answers (a hung server, a
        half-open connection) would otherwise hold the request, and a pool
        slot, forever.
        """
        task = asyncio.ensure_future(checkout)
        try:
            done, _ = await asyncio.wait({task}, timeout=self._connect_timeout)
            if not done:
                await _abandon(task)
        except BaseException:
            await _abandon(task)
            raise
        if not done:
            if not task.cancelled():
                task.exception()  # the caller hears of the timeout instead
            raise ServiceUnavailable("The database did not answer in time.")
        task.result()

    async def ping(self) -> bool:
        """Whether the database answers a trivial query within the readiness timeout."""
        try:
            async with (
                asyncio.timeout(self.readiness_timeout),
                self._probe_engine.connect() as conn,
            ):
                await conn.execute(text("SELECT 1"))
        except (TimeoutError, SQLAlchemyError, OSError):
            return False
        return True

    async def wait_until_reachable(self) -> None:
        """Retry with jittered exponential backoff (a Neon compute may be waking up)."""
        deadline = time.monotonic() + self._startup_timeout
        delay = 0.25
        attempt = 1
        while not await self.ping():
            # Use the whole window: the last wait is cut short to end at the
            # deadline, where one more ping decides.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnreachable(
                    f"the database did not answer within {self._startup_timeout:g} s"
                )
            logger.warning("database not reachable yet", extra={"attempt": attempt})
            jittered = delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            await asyncio.sleep(min(jittered, remaining))
            delay = min(delay * 2, 5.0)
            attempt += 1

    async def dispose(self) -> None:
        await self.engine.dispose()
        await self._probe_engine.dispose()


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a database call and wait until it has let go of its connection.

    psycopg meets a cancellation by asking the server to cancel the query, and
    waits up to 10 s for that; a second cancellation makes it close the
    connection at once (and the pool then drops it).
    """
    for _ in range(2):
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    await asyncio.wait({task})


async def _commit(transaction: AsyncSession | AsyncConnection) -> None:
    try:
        await transaction.commit()
    except DBAPIError as exc:
        if _commit_outcome_unknown(exc):
            # Not retried: replaying a write that may have landed could apply it twice.
            raise ServiceUnavailable(
                "The database connection was lost while committing; "
                "the change may or may not have been applied."
            ) from exc
        raise


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


# For routes that open their own short transactions (Database.session or
# Database.connection) rather than hold one for the whole request.
DatabaseDep = Annotated[Database, Depends(_database)]


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    database: Database = request.app.state.database
    async with database.session() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a
# failed commit can never follow a success status.
SessionDep = Annotated[AsyncSession, Depends(_request_session, scope="function")]
