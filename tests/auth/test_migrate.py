"""`taskstack-auth-migrate`, the deploy job's command: needs the database URL and nothing else."""

import subprocess
import sys
from pathlib import Path

import psycopg

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
