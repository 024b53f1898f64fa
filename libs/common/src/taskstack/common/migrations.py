"""Run one service's Alembic migrations, serialised across processes by an advisory lock.

Each service keeps its history in ``taskstack/<service>/migrations`` (shipped
inside its package, so an image can migrate itself) and its version table in
its own schema. Two pods or jobs that start together take turns: the second
waits for the lock (for a bounded time), then finds the schema already at head.
"""

import hashlib
from dataclasses import dataclass

import psycopg.errors
from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, MetaData, NullPool, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from taskstack.common.settings import MigrationSettings, from_environment

DEFAULT_LOCK_TIMEOUT_SECONDS = 60.0


class MigrationLockTimeout(RuntimeError):
    """Another session held the migration lock for longer than the migration would wait."""


@dataclass(frozen=True)
class MigrationHistory:
    schema: str
    script_location: str  # an Alembic package resource, "taskstack.auth:migrations"

    @property
    def lock_key(self) -> int:
        digest = hashlib.sha256(f"taskstack.migrations.{self.schema}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @property
    def program(self) -> str:
        return f"taskstack-{self.schema}-migrate"


def upgrade(
    database: URL,
    history: MigrationHistory,
    revision: str = "head",
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_SECONDS,
) -> None:
    """Bring one service's schema to ``revision``; safe to run concurrently and repeatedly.

    Needs a direct (session-mode) connection: a transaction-mode pooler would
    not keep the session-level advisory lock. Waits at most ``lock_timeout``
    seconds for another run's lock, then raises MigrationLockTimeout.
    """
    # The holder of a lock we wait for is named by its application_name: make ours say what it is.
    options = {} if "application_name" in database.query else {"application_name": history.program}
    engine = create_engine(database, poolclass=NullPool, connect_args=options)
    try:
        with engine.connect() as connection:
            _lock(connection, history, lock_timeout)
            try:
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{history.schema}"'))
                connection.commit()
                config = Config()
                config.set_main_option("script_location", history.script_location)
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
            finally:
                connection.rollback()
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": history.lock_key}
                )
                connection.commit()
    finally:
        engine.dispose()


def _lock(connection: Connection, history: MigrationHistory, timeout: float) -> None:
    """Take the migration's session-level advisory lock, waiting at most ``timeout`` seconds.

    PostgreSQL's lock_timeout bounds the wait in the server, in the lock's queue (so
    concurrent runners still take turns in order), and is reset once the lock is held:
    the migrations themselves keep the server's setting.
    """
    connection.execute(
        text("SELECT set_config('lock_timeout', :timeout, false)"),
        {"timeout": f"{max(1, round(timeout * 1000))}ms"},
    )
    try:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": history.lock_key})
    except OperationalError as exc:
        if not isinstance(exc.orig, psycopg.errors.LockNotAvailable):
            raise
        connection.rollback()
        raise MigrationLockTimeout(
            f"gave up after {timeout:g} s waiting for the migration lock of schema "
            f"{history.schema!r}, held by {_lock_holder(connection, history)}"
        ) from None
    connection.execute(text("RESET lock_timeout"))
    connection.commit()


def _lock_holder(connection: Connection, history: MigrationHistory) -> str:
    """Who holds the migration's advisory lock, as far as this session may see."""
    # A bigint advisory key is stored as two oids: its high and its low 32 bits.
    key = history.lock_key & 0xFFFF_FFFF_FFFF_FFFF
    row = connection.execute(
        text(
            "SELECT l.pid, a.application_name, a.client_addr::text, a.state,"
            " extract(epoch FROM now() - a.backend_start)::int"
            " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.classid = CAST(:high AS oid) AND l.objid = CAST(:low AS oid)"
        ),
        {"high": key >> 32, "low": key & 0xFFFF_FFFF},
    ).first()
    connection.rollback()
    if row is None:
        return "a session that let it go meanwhile"
    pid, application, client, state, age = row
    details = [f"application {application!r}" if application else "no application name"]
    if client:
        details.append(f"client {client}")
    if state:
        details.append(f"state {state!r}")
    if age is not None:
        details.append(f"connected {age} s ago")
    return (
        f"PostgreSQL backend {pid} ({', '.join(details)}); "
        f"SELECT pg_terminate_backend({pid}) ends it if it is stuck"
    )


def run_env(target_metadata: MetaData) -> None:
    """The body of every service's ``migrations/env.py`` (online mode only)."""
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=target_metadata.schema,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def migrate_main(history: MigrationHistory) -> None:
    """Body of a service's ``taskstack-<service>-migrate`` command (the deploy job's).

    It reads only the shared database settings: the job needs no signing key,
    pepper or other service secret.
    """
    name = history.program
    settings = from_environment(MigrationSettings, name)
    try:
        upgrade(
            settings.migration_database,
            history,
            lock_timeout=settings.database_migration_lock_timeout_seconds,
        )
    except MigrationLockTimeout as exc:
        raise SystemExit(f"{name}: {exc}") from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        raise SystemExit(f"{name}: cannot reach the database: {reason}") from None
    print(f"{name}: schema {history.schema!r} is at head")
