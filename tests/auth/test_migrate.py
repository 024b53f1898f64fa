"""`taskstack-auth-migrate`, the deploy job's command: needs the database URL and nothing else."""

import subprocess
import sys
from pathlib import Path

import psycopg

from taskstack.auth.migrate import HISTORY
from tests.support.postgres import PostgresServer

MIGRATE = str(Path(sys.executable).with_name("taskstack-auth-migrate"))


def test_migrates_with_only_a_database_url(postgres: PostgresServer) -> None:
    url = postgres.libpq(postgres.create_database("taskstack_auth_job"))
    result = subprocess.run(
        [MIGRATE], env={"DATABASE_URL": url}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "taskstack-auth-migrate: schema 'auth' is at head"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM auth.alembic_version").fetchone() == (
            "auth0002",
        )


def test_a_missing_database_url_is_one_line() -> None:
    result = subprocess.run([MIGRATE], env={}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "taskstack-auth-migrate: invalid configuration: DATABASE_URL: Field required"
    )


def test_a_pooled_database_url_without_a_direct_one_is_refused_in_one_line() -> None:
    pooled = "postgresql://taskstack:Pa55word99@ep-x-1-pooler.eu-central-1.aws.neon.tech/app"
    result = subprocess.run(
        [MIGRATE], env={"DATABASE_URL": pooled}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "taskstack-auth-migrate: invalid configuration: DATABASE_URL is a transaction-mode "
        "pooler: set DATABASE_MIGRATION_URL to the direct (unpooled) endpoint for migrations"
    )
    assert "Pa55word99" not in result.stdout + result.stderr


def test_production_refuses_a_database_url_that_does_not_verify_the_server() -> None:
    plain = "postgresql://taskstack:Pa55word99@db.example/app?sslmode=require"
    environment = {
        "DATABASE_URL": plain,
        "ENVIRONMENT": "production",
        "TOKEN_ISSUER": "https://api.example",
    }
    result = subprocess.run([MIGRATE], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        "taskstack-auth-migrate: invalid configuration: DATABASE_URL must verify the server"
    )
    assert "Pa55word99" not in result.stdout + result.stderr


def test_a_held_migration_lock_fails_the_job_after_the_timeout_naming_the_holder(
    postgres: PostgresServer,
) -> None:
    url = postgres.libpq(postgres.create_database("taskstack_auth_locked"))
    with psycopg.connect(url, autocommit=True, application_name="stuck-migration") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (HISTORY.lock_key,))
        environment = {"DATABASE_URL": url, "DATABASE_MIGRATION_LOCK_TIMEOUT_SECONDS": "1"}
        result = subprocess.run(
            [MIGRATE], env=environment, capture_output=True, text=True, timeout=60
        )
        pid = holder.info.backend_pid
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "taskstack-auth-migrate: gave up after 1 s waiting for the migration lock of schema "
        f"'auth', held by PostgreSQL backend {pid} (application 'stuck-migration'"
    )
