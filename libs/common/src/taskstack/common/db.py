"""The database: one psycopg connection pool per service, and the one transaction vocabulary.

Every service talks to PostgreSQL in exactly these ways (``tests/test_workspace.py``
fails if a service opens a connection or a transaction any other way):

=====================================  =========================================================
``async with database.read() as c``    a connection in autocommit: each statement is its own
                                       transaction, no BEGIN or COMMIT round trip. For reads.
``async with database.write() as c``   one transaction: committed when the block ends, rolled
                                       back if it raises. For a write of several statements.
``async with database.single_write()   a connection in autocommit, for a write that is one
as c``                                 statement (INSERT/UPDATE/DELETE ... RETURNING, and
                                       reads after it): it commits on its own, with no BEGIN
                                       or COMMIT round trip.
several blocks, one after the other    each its own short transaction: for a flow that must
                                       not hold a connection while it waits (auth hashes
                                       passwords between blocks).
=====================================  =========================================================

The block commits before the service returns, so a failed commit can never
follow a success status. Statements are SQLAlchemy Core constructs built once
from the SQLModel tables and compiled to SQL text (``Statement.of``), then run
on psycopg directly: SQLModel stays the source of truth for the schema and
the migrations, and a request pays for the driver only.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.errors import QueryCanceled
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from taskstack.common.errors import ServiceUnavailable
from taskstack.common.metrics import DB_CONNECTION_ERRORS, DB_POOL_WAIT, track_pool
from taskstack.common.pool import Connection as Connection  # the vocabulary's type
from taskstack.common.pool import Pool
from taskstack.common.settings import ServiceSettings
from taskstack.common.watch import StatementWatch

logger = logging.getLogger(__name__)

T = TypeVar("T")

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement compiled once to SQL text with psycopg's ``%(name)s`` placeholders.

    ``defaults`` are the values bound into the construct itself (a literal
    limit, say); the caller's values, given by bound-parameter name, complete
    them at each execution.
    """

    sql: str
    defaults: Mapping[str, Any]

    @classmethod
    def of(cls, construct: ClauseElement) -> "Statement":
        compiled = construct.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        if prefetched := [*compiled.insert_prefetch, *compiled.update_prefetch]:
            # SQLAlchemy computes these in Python at execution, which psycopg alone
            # would not: the statement must give them their values.
            names = ", ".join(column.key for column in prefetched)
            raise ValueError(f"give the statement a value for {names} (a Python-side default)")
        defaults = {
            name: compiled.params[name]
            for name, bind in compiled.binds.items()
            if not bind.required and name in compiled.params
        }
        return cls(str(compiled), defaults)

    def values(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**self.defaults, **values} if self.defaults else values


async def fetch_one(
    connection: Connection, statement: Statement, values: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    cursor = await _execute(
        connection, statement.sql, statement.values(values), prepare=True, binary=True
    )
    return await cursor.fetchone()


async def fetch_all(
    connection: Connection, statement: Statement, values: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    cursor = await _execute(
        connection, statement.sql, statement.values(values), prepare=True, binary=True
    )
    return await cursor.fetchall()


async def execute(connection: Connection, statement: Statement, values: Mapping[str, Any]) -> int:
    """Run a statement for its effect; the number of rows it touched."""
    cursor = await _execute(connection, statement.sql, statement.values(values), prepare=True)
    return cursor.rowcount


# Pooled connections handed out without a liveness check, and the watch their
# first statement runs under (see Database.connection).
_UNCHECKED: dict[Connection, StatementWatch] = {}


async def _execute(
    connection: Connection,
    sql: str,
    values: Mapping[str, Any] | None = None,
    *,
    prepare: bool | None = None,
    binary: bool = False,
) -> "psycopg.AsyncCursor[tuple[Any, ...]]":
    """Run ``sql``. A compiled Statement is run again and again: it is prepared on its
    first run (``prepare=True``), where the connection allows prepared statements.
    Rows are fetched in binary (``binary=True``): the same Python values, parsed with
    less work than their text."""
    call = connection.execute(sql, values, prepare=prepare, binary=binary)
    watch = _UNCHECKED.pop(connection, None)
    if watch is None:
        return await call
    return await watch.answered(call)


class DatabaseUnreachable(RuntimeError):
    """The database did not answer within the start-up window."""


def is_transient(exc: BaseException) -> bool:
    """A failure that a fresh attempt of the whole transaction may not meet again.

    Serialization failures, deadlocks and lost or refused connections are; a
    statement timeout is not (the same statement would time out again).
    """
    return isinstance(exc, psycopg.OperationalError) and not isinstance(exc, QueryCanceled)


def libpq_url(url: URL) -> str:
    """``url`` as a libpq connection string: its parts and query options, as psycopg would
    get them from SQLAlchemy (a rendered URL would mangle options that hold spaces)."""
    parts: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "password": url.password,
        "dbname": url.database,
    }
    parts |= {
        key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()
    }
    return make_conninfo("", **{key: value for key, value in parts.items() if value is not None})


ConnectionHook = Callable[[Connection], Awaitable[None]]


# Class 40 (transaction rollback), but not 40003, "statement completion unknown".
_ROLLED_BACK = frozenset({"40000", "40001", "40002", "40P01"})


def _rolled_back(exc: psycopg.Error) -> bool:
    """Whether the server says it rolled the transaction back (a serialization failure,
    a deadlock): then nothing was applied. psycopg's TransactionRollback class is not
    the parent of SerializationFailure or DeadlockDetected, so the code decides."""
    return exc.sqlstate in _ROLLED_BACK


class OutcomeUnknown(ServiceUnavailable):
    """The connection was lost while a write committed: whether it did is unknown."""

    default_detail = (
        "The database connection was lost while committing; "
        "the change may or may not have been applied."
    )


class Database:
    """One service's connection pool, built from its settings; opened by the app's lifespan."""

    def __init__(self, settings: ServiceSettings, *, service: str):
        self.service = service
        self._conninfo = libpq_url(settings.database)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": settings.database_connect_timeout,
            "application_name": f"taskstack-{service}",
        }
        if settings.uses_transaction_pooler and not settings.database_pooler_prepared_statements:
            # A transaction-mode pooler hands each transaction to any server
            # connection: a statement prepared on one is unknown to the next, unless
            # the pooler tracks protocol-level prepared statements itself.
            self._connect_kwargs["prepare_threshold"] = None
        self._connect_timeout = settings.database_connect_timeout
        self._startup_timeout = settings.database_startup_timeout
        self.readiness_timeout = settings.readiness_timeout
        self._configure_hooks: list[ConnectionHook] = []
        self.pool = Pool(
            self._new_connection,
            keep=settings.database_pool_size,
            limit=settings.database_pool_size + settings.database_max_overflow,
            acquire_timeout=settings.database_pool_timeout,
            connect_timeout=settings.database_connect_timeout,
            check=self._check,
            check_idle=settings.database_pool_check_idle_seconds,
        )
        self._wait = DB_POOL_WAIT.labels(service)
        self._watch = StatementWatch(self._connect_timeout / 2, self.answers)
        self._connection_errors = DB_CONNECTION_ERRORS.labels(service)
        track_pool(self)

    def on_connect(self, hook: ConnectionHook) -> None:
        """Run ``hook`` on every connection the pool opens (tracing instruments them)."""
        self._configure_hooks.append(hook)

    async def _new_connection(self, seconds: float) -> Connection:
        try:
            connection = await self._within(
                seconds, psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
            )
        except psycopg.OperationalError:
            self._connection_errors.inc()
            raise
        for hook in self._configure_hooks:
            await hook(connection)
        return connection

    def read(self) -> "_Lease":
        """A connection in autocommit mode: every statement commits on its own."""
        return _Lease(self)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        async with _Lease(self) as connection:
            await _execute(connection, "BEGIN")
            try:
                yield connection
            except BaseException:
                if not connection.broken:
                    # A failed ROLLBACK leaves the connection broken: the pool drops it.
                    with contextlib.suppress(psycopg.Error):
                        await connection.execute("ROLLBACK")
                raise
            await self._commit(connection)

    def single_write(self) -> "_Lease":
        """A connection in autocommit mode for a write that is one statement.

        The statement commits as it runs. A connection lost while it runs leaves
        unknown whether it did, as a lost COMMIT does: a 503 that says so, never a
        replay that could apply it twice. Getting the connection, and a statement
        the server rolled back (a deadlock), are replayed as usual.
        """
        return _SingleWriteLease(self)

    async def _commit(self, connection: Connection) -> None:
        try:
            await connection.execute("COMMIT")
        except psycopg.OperationalError as exc:
            if _rolled_back(exc):
                raise  # rolled back for certain: a replay of the request is safe
            # Not replayed: a write that may have landed could be applied twice.
            raise OutcomeUnknown() from exc

    async def lend(self) -> Connection:
        """A pooled connection for a block (``_Lease``); its first statement is watched
        when the pool handed it out without a check."""
        started = time.perf_counter()
        try:
            connection, live = await self.pool.acquire()
        finally:
            self._wait.observe(time.perf_counter() - started)
        if not live:
            # Not checked: its first answer is awaited as long as a check would be,
            # half the connect timeout, then the server is asked for the other half.
            _UNCHECKED[connection] = self._watch
        return connection

    async def take_back(self, connection: Connection, error: BaseException | None) -> None:
        if isinstance(error, psycopg.OperationalError) and connection.broken:
            self._connection_errors.inc()
        _UNCHECKED.pop(connection, None)
        await self.pool.release(connection)

    async def _check(self, connection: Connection, seconds: float) -> None:
        """A round trip on a pooled connection before a request gets it."""
        try:
            await self._within(seconds, connection.execute(""))
        except psycopg.OperationalError:
            self._connection_errors.inc()
            raise

    @staticmethod
    async def _within(seconds: float, call: Coroutine[Any, Any, T]) -> T:
        """``call``'s result, or OperationalError after ``seconds``: a server that
        stopped answering without closing the connection (a hung server, a half-open
        connection) must not hold a request, or a pool slot, forever."""
        task = asyncio.ensure_future(call)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(seconds, 0.0))
        except BaseException:
            await _abandon(task)
            raise
        if not done:
            await _abandon(task)
            raise psycopg.OperationalError("the database did not answer in time")
        return task.result()

    def pool_stats(self) -> dict[str, float]:
        pool = self.pool
        return {
            "size": float(pool.open_connections),
            "checked_out": float(pool.open_connections - pool.idle),
            "overflow": float(max(pool.open_connections - pool.keep, 0)),
            "limit": float(pool.limit),
        }

    async def ping(self) -> bool:
        """Whether the database answers a trivial query within the readiness timeout.

        On a connection of its own, so it reports whether the database answers,
        not whether the pool has room.
        """
        return await self.answers(self.readiness_timeout)

    async def answers(self, seconds: float) -> bool:
        """Whether the database answers a trivial query, on a connection of its own,
        within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                connection = await psycopg.AsyncConnection.connect(
                    self._conninfo, **self._connect_kwargs
                )
                try:
                    await connection.execute("SELECT 1")
                finally:
                    await connection.close()
        except (TimeoutError, psycopg.Error, OSError):
            return False
        return True

    async def open(self) -> None:
        """Return once the database answers, retrying with jittered backoff (a Neon compute
        may be waking up from zero) for up to the start-up timeout."""
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

    async def close(self) -> None:
        await self.pool.close()


async def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a database call and wait until it has let go of its connection.

    psycopg meets a cancellation by asking the server to cancel the query, and
    waits for that; a second cancellation makes it close the connection at
    once (and the pool then drops it).
    """
    for _ in range(2):
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    await asyncio.wait({task})


class _Lease:
    """A pooled connection for one ``async with`` block, given back when it ends.

    A class rather than a generator-based context manager: every request
    enters one, and a generator's machinery costs more than the rest of the
    block's own work.
    """

    __slots__ = ("_connection", "_database")

    def __init__(self, database: Database) -> None:
        self._database = database

    async def __aenter__(self) -> Connection:
        self._connection = await self._database.lend()
        return self._connection

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any
    ) -> None:
        await self._database.take_back(self._connection, error)


class _SingleWriteLease(_Lease):
    __slots__ = ()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any
    ) -> None:
        await super().__aexit__(kind, error, traceback)
        if isinstance(error, psycopg.OperationalError) and not (
            _rolled_back(error) or isinstance(error, QueryCanceled)
        ):
            raise OutcomeUnknown() from error
