"""Migrations: idempotent, in the service's own schema, serialised across concurrent runners."""

import threading
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from taskstack.common.migrations import MigrationHistory, upgrade
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
