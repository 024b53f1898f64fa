"""`taskstack migrate` and argument errors: one line, non-zero exit, no traceback."""

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.postgres import PostgresServer

TASKSTACK = str(Path(sys.executable).with_name("taskstack"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TASKSTACK, *args], capture_output=True, text=True, timeout=120, env=env)


def test_migrate_brings_every_schema_to_head_twice_over(postgres: PostgresServer) -> None:
    url = postgres.libpq(postgres.create_database("taskstack_cli"))
    for _ in range(2):
        result = run("migrate", env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr
        assert "auth: schema 'auth' is at head" in result.stdout
        assert "tasks: schema 'tasks' is at head" in result.stdout
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version_num FROM auth.alembic_version").fetchone() is not None


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["migrate"], {}, "taskstack: error: invalid configuration: DATABASE_URL: Field required"),
        (
            ["migrate"],
            {"DATABASE_URL": "mysql://root:pw@h/db"},
            "taskstack: error: invalid configuration",
        ),
        (
            ["migrate"],
            {"DATABASE_URL": "postgres://u:pw@127.0.0.1:9/db"},
            "taskstack: error: cannot reach the database",
        ),
        (
            ["up", "--port", "99999"],
            {},
            "taskstack up: error: argument --port: '99999' is not a port number",
        ),
        (["up", "--database-url", "mysql://x"], {}, "taskstack up: error: argument --database-url"),
        (["nope"], {}, "taskstack: error: argument command: invalid choice"),
    ],
)
def test_bad_input_is_a_one_line_error(args: list[str], env: dict[str, str], message: str) -> None:
    result = run(*args, env={"PATH": "/usr/bin:/bin", **env})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(message)
    assert "pw@" not in result.stderr


def test_keys_generate_list_and_jwks(tmp_path: Path) -> None:
    directory = str(tmp_path / "keys")
    first = run("keys", "generate", "--dir", directory)
    second = run("keys", "generate", "--dir", directory, "--development")
    assert first.returncode == second.returncode == 0
    old, new = first.stdout.strip(), second.stdout.strip()
    assert new.startswith("insecure-development-")
    listing = run("keys", "list", "--dir", directory, "--signing-kid", new)
    assert listing.stdout.splitlines() == sorted([old, f"{new}  (signs)"])
    jwks = json.loads(run("keys", "jwks", "--dir", directory).stdout)
    assert {key["kid"] for key in jwks["keys"]} == {old, new}
    assert all("d" not in key for key in jwks["keys"])


def test_keys_errors_are_one_line(tmp_path: Path) -> None:
    result = run("keys", "list", "--dir", str(tmp_path / "none"))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"taskstack: error: AUTH_SIGNING_KEYS_DIR {tmp_path / 'none'} is not a directory"
    )
