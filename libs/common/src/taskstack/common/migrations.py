"""Run one service's Alembic migrations, serialised across processes by an advisory lock.

Each service keeps its history in ``taskstack/<service>/migrations`` (shipped
inside its package, so an image can migrate itself) and its version table in
its own schema. Two pods or jobs that start together take turns: the second
waits for the lock, then finds the schema already at head.
"""

import hashlib
from dataclasses import dataclass

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, NullPool, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from taskstack.common.settings import ServiceSettings, from_environment


@dataclass(frozen=True)
class MigrationHistory:
    schema: str
    script_location: str  # an Alembic package resource, "taskstack.auth:migrations"

    @property
    def lock_key(self) -> int:
        digest = hashlib.sha256(f"taskstack.migrations.{self.schema}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)


def upgrade(database: URL, history: MigrationHistory, revision: str = "head") -> None:
    """Bring one service's schema to ``revision``; safe to run concurrently and repeatedly.

    Needs a direct (session-mode) connection: a transaction-mode pooler would
    not keep the session-level advisory lock.
    """
    engine = create_engine(database, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": history.lock_key})
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
    name = f"taskstack-{history.schema}-migrate"
    settings = from_environment(ServiceSettings, name)
    try:
        upgrade(settings.migration_database, history)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        raise SystemExit(f"{name}: cannot reach the database: {reason}") from None
    print(f"{name}: schema {history.schema!r} is at head")
