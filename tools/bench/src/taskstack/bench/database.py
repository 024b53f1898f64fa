"""The PostgreSQL server a benchmark runs on, and the scratch databases it creates there."""

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from taskstack.common.migrations import upgrade
from taskstack.dev.postgres import check_reachable, embedded_postgres
from taskstack.dev.services import SERVICES


def libpq(url: URL) -> str:
    """``url`` as libpq (and psycopg) spell it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_server(database_url: URL | None) -> Iterator[URL]:
    """A server to create databases on: the one at ``database_url``, or a private embedded one."""
    if database_url is not None:
        check_reachable(database_url)
        yield database_url
        return
    with (
        tempfile.TemporaryDirectory(prefix="taskstack-bench-pg-") as data_dir,
        embedded_postgres(Path(data_dir) / "postgres") as url,
    ):
        yield url


@contextlib.contextmanager
def scratch_database(server: URL, label: str) -> Iterator[URL]:
    """A fresh, migrated database ``taskstack_bench_<label>_<random>``, dropped on exit."""
    name = f"taskstack_bench_{label}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq(server), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server.set(database=name)
    try:
        for service in SERVICES:
            upgrade(url, service.history)
        yield url
    finally:
        with psycopg.connect(libpq(server), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
