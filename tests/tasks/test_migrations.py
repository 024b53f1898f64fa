"""The tasks schema's migrations: the tables and indexes the queries rely on, both ways."""

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import NullPool, create_engine

from taskstack.common.migrations import upgrade
from taskstack.tasks.migrate import HISTORY
from tests.support.postgres import PostgresServer

EXPECTED_INDEXES = {
    "pk_task",
    "ix_task_owner_id_created_at",
    "ix_task_owner_id_updated_at",
    "ix_task_owner_id_due_at_asc",
    "ix_task_owner_id_due_at_desc",
    "ix_task_owner_id_priority",
    "ix_task_owner_id_title",
    "ix_task_owner_id_tags",
    "ix_task_owner_id_title_trgm",
    "ix_task_owner_id_description_trgm",
    "pk_idempotency_key",
    "ix_idempotency_key_expires_at",
    "pk_task_count",
    "pk_rate_limit_window",
    "pk_closed_account",
    "ix_closed_account_changed_at",
}


def index_names(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'tasks'")
        return {name for (name,) in rows.fetchall()}


def test_upgrade_creates_every_index_and_downgrade_removes_them(postgres: PostgresServer) -> None:
    url = postgres.create_database("taskstack_migrations")
    dsn = postgres.libpq(url)
    upgrade(url, HISTORY)
    assert index_names(dsn) == EXPECTED_INDEXES | {"alembic_version_pkc"}
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", HISTORY.script_location)
        config.attributes["connection"] = connection
        command.downgrade(config, "tasks0001")
    engine.dispose()
    assert not index_names(dsn) & EXPECTED_INDEXES
    upgrade(url, HISTORY)  # and back up again
    assert index_names(dsn) >= EXPECTED_INDEXES


def test_the_constraints_hold_for_writers_other_than_the_api(postgres: PostgresServer) -> None:
    url = postgres.create_database("taskstack_migrations")
    upgrade(url, HISTORY)
    insert = (
        "INSERT INTO tasks.task (id, owner_id, title, completed, completed_at, priority) "
        "VALUES (gen_random_uuid(), gen_random_uuid(), %s, %s, %s, %s)"
    )
    bad_rows = [
        ("", False, None, 1),
        ("x" * 201, False, None, 1),
        ("t", True, None, 1),  # completed without completed_at
        ("t", False, "2030-01-01T00:00:00Z", 1),
        ("t", False, None, 3),
    ]
    with psycopg.connect(postgres.libpq(url), autocommit=True) as conn:
        conn.execute(insert, ("fine", False, None, 1))
        for row in bad_rows:
            try:
                conn.execute(insert, row)
            except psycopg.errors.CheckViolation:
                continue
            raise AssertionError(f"accepted {row}")


def test_the_quota_counts_start_from_the_tasks_that_exist(postgres: PostgresServer) -> None:
    url = postgres.create_database("taskstack_migrations")
    upgrade(url, HISTORY)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", HISTORY.script_location)
        config.attributes["connection"] = connection
        command.downgrade(config, "tasks0002")  # the release before the quota
    engine.dispose()
    with psycopg.connect(postgres.libpq(url), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks.task (id, owner_id, title) "
            "SELECT gen_random_uuid(), owner, 't' FROM (VALUES "
            "('00000000-0000-0000-0000-00000000000a'::uuid, 3), "
            "('00000000-0000-0000-0000-00000000000b'::uuid, 1)) AS o (owner, n), "
            "generate_series(1, n)"
        )
    upgrade(url, HISTORY)
    with psycopg.connect(postgres.libpq(url)) as conn:
        counts = conn.execute("SELECT owner_id::text, tasks FROM tasks.task_count").fetchall()
    assert sorted(counts) == [
        ("00000000-0000-0000-0000-00000000000a", 3),
        ("00000000-0000-0000-0000-00000000000b", 1),
    ]
