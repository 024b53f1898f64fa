"""PgBouncer in transaction pooling mode, as Neon's pooled endpoint behaves."""

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from taskstack.bench.processes import free_port
from tests.e2e.cluster import SERVER_USER, PrivateCluster, hand_over
from tests.support.tools import require

STOP_TIMEOUT = 10.0


@dataclass
class Pooler:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def url(self, direct: URL) -> URL:
        """``direct`` (a database on the cluster) reached through the pooler instead."""
        return direct.set(host="127.0.0.1", port=self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def show(self, what: str) -> list[dict[str, object]]:
        """A ``SHOW <what>`` of the admin console (CLIENTS, SERVERS, POOLS, ...) as dicts."""
        dsn = f"host=127.0.0.1 port={self.port} dbname=pgbouncer user=postgres"
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as admin:
            cursor = admin.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _config(
    cluster: PrivateCluster, directory: Path, port: int, version: tuple[int, ...], pool_size: int
) -> str:
    settings: dict[str, str] = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(directory / "userlist.txt"),
        "pool_mode": "transaction",
        "max_client_conn": "1000",
        "default_pool_size": str(pool_size),
        "logfile": str(directory / "pgbouncer.log"),
        "pidfile": str(directory / "pgbouncer.pid"),
        "admin_users": "postgres",
        "server_check_delay": "1",
        "server_login_retry": "1",
        "ignore_startup_parameters": "extra_float_digits,options",
    }
    if version >= (1, 21):
        # Newer PgBouncers can track prepared statements; Neon's pooler may not,
        # so the services must not need it.
        settings["max_prepared_statements"] = "0"
    lines = [
        "[databases]",
        f"* = host=127.0.0.1 port={cluster.port}",
        "[pgbouncer]",
        *(f"{name} = {value}" for name, value in settings.items()),
    ]
    return "\n".join(lines) + "\n"


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError("pgbouncer did not start listening")
        time.sleep(0.05)


@contextlib.contextmanager
def pgbouncer(cluster: PrivateCluster, *, pool_size: int = 20) -> Iterator[Pooler]:
    """PgBouncer in front of ``cluster``; ``pool_size`` server connections per database."""
    binary = require("pgbouncer")
    with tempfile.TemporaryDirectory(prefix="taskstack-e2e-pgbouncer-") as tmp:
        directory = Path(tmp)
        port = free_port()
        (directory / "userlist.txt").write_text('"postgres" ""\n')
        config = _config(cluster, directory, port, _version(binary), pool_size)
        (directory / "pgbouncer.ini").write_text(config)
        hand_over(directory)
        command = [binary, str(directory / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command[1:1] = ["-u", SERVER_USER]  # it refuses to run as root
        log_path = directory / "pgbouncer.log"
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_listening(port, process, log_path)
            yield Pooler(port, process, log_path)
        finally:
            _stop(process)


def _version(binary: str) -> tuple[int, ...]:
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = output.stdout.split("\n", 1)[0].split()[-1]  # "PgBouncer 1.18.0"
    return tuple(int(part) for part in first.split(".") if part.isdigit())


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)  # PgBouncer: SIGINT is a fast shutdown
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
