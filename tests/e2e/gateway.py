"""nginx as the ingress gateway, routing by path prefix the way the chart's Ingress does."""

import contextlib
import grp
import os
import pwd
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import require

STOP_TIMEOUT = 10.0
# Idle keep-alive connections to a service are dropped before uvicorn drops
# them (its --timeout-keep-alive is 5 s), so nginx never reuses a connection
# the service is closing: that race would fail a POST nginx may not retry.
UPSTREAM_KEEPALIVE_TIMEOUT = "4s"


@dataclass
class Gateway:
    base_url: str
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def access_log_path(self) -> Path:
        return self.directory / "access.log"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.access_log_path
        return path.read_text(errors="replace") if path.exists() else ""


def nginx_config(
    directory: Path, port: int, upstreams: Mapping[str, Sequence[str]], routes: Mapping[str, str]
) -> str:
    """``upstreams``: service name → replica addresses; ``routes``: path prefix → service."""
    user = ""
    if os.geteuid() == 0:
        # As root the master hands the workers to an unprivileged user.
        nobody = pwd.getpwnam("nobody")
        user = f"user nobody {grp.getgrgid(nobody.pw_gid).gr_name};"
    upstream_blocks = "\n".join(
        f"""
    upstream {name} {{
        {" ".join(f"server {address};" for address in addresses)}
        keepalive 32;
        keepalive_timeout {UPSTREAM_KEEPALIVE_TIMEOUT};
    }}"""
        for name, addresses in upstreams.items()
    )
    # An Ingress "Prefix" path matches whole segments: /v1/auth and /v1/auth/...,
    # never /v1/authx.
    locations = "\n".join(
        f"""
        location {match} {{
            proxy_pass http://{service};
        }}"""
        for prefix, service in routes.items()
        for match in (f"= {prefix}", f"{prefix}/")
    )
    d = directory
    return f"""
{user}
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    log_format gateway '$remote_addr "$request" $status $request_time '
                       'upstream=$upstream_addr upstream_status=$upstream_status '
                       'xff="$http_x_forwarded_for"';
    access_log {d}/access.log gateway;

    # The services enforce their own (smaller) body limit with a problem+json 413.
    client_max_body_size 4m;
    server_tokens off;
{upstream_blocks}

    server {{
        listen 127.0.0.1:{port};

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        # Overwrite, never append: whatever X-Forwarded-For a client sends is
        # discarded, and the services (trusting only this address) see the
        # address nginx took the connection from.
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Real-IP "";
        proxy_set_header Forwarded "";

        # A replica that is gone (connection refused, reset before answering)
        # is skipped; a request is only sent twice when the first replica
        # never received it, or when it is idempotent (nginx's default).
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries 3;
        proxy_next_upstream_timeout 10s;
        proxy_connect_timeout 2s;
        proxy_read_timeout 60s;
{locations}

        location / {{
            default_type application/problem+json;
            return 404 '{{"type":"about:blank","title":"Not Found","status":404}}';
        }}
    }}
}}
"""


def _wait_listening(port: int, process: subprocess.Popen[bytes], gateway: Gateway) -> None:
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{gateway.error_log()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nginx did not start listening:\n{gateway.error_log()}")
        time.sleep(0.05)


@contextlib.contextmanager
def nginx(
    upstreams: Mapping[str, Sequence[str]], routes: Mapping[str, str], *, port: int
) -> Iterator[Gateway]:
    binary = require("nginx")
    with tempfile.TemporaryDirectory(prefix="taskstack-e2e-nginx-") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)  # the workers (another user under root) create temp files here
        config = directory / "nginx.conf"
        config.write_text(nginx_config(directory, port, upstreams, routes))
        process = subprocess.Popen(
            [binary, "-c", str(config), "-p", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        gateway = Gateway(f"http://127.0.0.1:{port}", process, directory)
        try:
            _wait_listening(port, process, gateway)
            yield gateway
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers, whatever the master did
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
