"""Migrations: idempotent, in the service's own schema, serialised across concurrent runners."""

import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.common.migrations import MigrationHistory, MigrationLockTimeout, upgrade
from taskstack.dev.services import SERVICES
from tests.support.postgres import PostgresServer

# A history whose only migration takes a while and records each time it runs.
SLOW_HISTORY = MigrationHistory(
    schema="lockdemo", script_location=str(Path(__file__).parent / "slow_migrations")
)


def test_concurrent_runners_apply_a_migration_exactly_once(postgres: PostgresServer) -> None:
    url = postgres.create_database("taskstack_locks")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(url, SLOW_HISTORY)
        except BaseException as exc:
            errors.append(exc)

    runners = [threading.Thread(target=run) for _ in range(3)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
    assert errors == []
    with psycopg.connect(postgres.libpq(url)) as conn:
        assert conn.execute("SELECT count(*) FROM lockdemo.applied").fetchone() == (1,)
        assert conn.execute("SELECT version_num FROM lockdemo.alembic_version").fetchall() == [
            ("slow0001",)
        ]


def test_every_service_migrates_into_its_own_schema_and_reruns_cleanly(
    postgres: PostgresServer,
) -> None:
    url: URL = postgres.create_database("taskstack_fresh")
    for _ in range(2):
        for service in SERVICES:
            upgrade(url, service.history)
    with psycopg.connect(postgres.libpq(url)) as conn:
        for service in SERVICES:
            schema = service.history.schema
            [(table_schema,)] = conn.execute(
                "SELECT table_schema FROM information_schema.tables"
                " WHERE table_name = 'alembic_version' AND table_schema = %s",
                (schema,),
            ).fetchall()
            assert table_schema == schema
        public = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert public == (0,)


def test_a_held_lock_is_waited_for_a_bounded_time_and_its_holder_named(
    postgres: PostgresServer,
) -> None:
    """A lock left behind (a migration stuck, or a session a pooler never ended) fails the
    migration after the timeout with who holds it, instead of a hang until the Job's deadline."""
    url = postgres.create_database("taskstack_lock_wait")
    holder = psycopg.connect(
        postgres.libpq(url), autocommit=True, application_name="stuck-migration"
    )
    with holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (SLOW_HISTORY.lock_key,))
        holder_pid = holder.info.backend_pid
        started = time.monotonic()
        with pytest.raises(MigrationLockTimeout) as caught:
            upgrade(url, SLOW_HISTORY, lock_timeout=1.0)
        waited = time.monotonic() - started
        assert 1.0 <= waited < 5.0
        message = str(caught.value)
        assert message.startswith(
            "gave up after 1 s waiting for the migration lock of schema 'lockdemo', "
            f"held by PostgreSQL backend {holder_pid} (application 'stuck-migration'"
        )
        assert f"pg_terminate_backend({holder_pid})" in message
        assert "\n" not in message
        holder.execute("SELECT pg_advisory_unlock(%s)", (SLOW_HISTORY.lock_key,))
    upgrade(url, SLOW_HISTORY, lock_timeout=1.0)  # free again: it migrates
    with psycopg.connect(postgres.libpq(url)) as conn:
        assert conn.execute("SELECT count(*) FROM lockdemo.applied").fetchone() == (1,)
