"""`taskstack up`: the whole stack on one machine, no cluster, no installed PostgreSQL."""

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key
from taskstack.common.migrations import upgrade
from taskstack.dev.errors import CliError
from taskstack.dev.gateway import SERVER_OPTIONS, DevGateway
from taskstack.dev.logs import LogLines
from taskstack.dev.mail import mail_dir, smtp_sink
from taskstack.dev.postgres import check_reachable, embedded_postgres
from taskstack.dev.services import SERVICES, Service, uvicorn_command

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class UpOptions:
    data_dir: Path
    port: int
    service_ports: dict[str, int]
    database_url: URL | None
    log_level: str
    log_lines: LogLines
    reload: bool
    smtp_port: int = 0  # the development mail sink's; 0: any free port


def up(options: UpOptions) -> None:
    for port in (options.port, *options.service_ports.values()):
        _check_port_free(port)
    _prepare_data_dir(options.data_dir)
    with (
        _database(options) as database,
        smtp_sink(mail_dir(options.data_dir), port=options.smtp_port) as smtp_port,
    ):
        for service in SERVICES:
            upgrade(database, service.history)
        asyncio.run(_serve(options, database, smtp_port))


@contextlib.contextmanager
def _database(options: UpOptions) -> Iterator[URL]:
    if options.database_url is not None:
        check_reachable(options.database_url)
        yield options.database_url
    else:
        with embedded_postgres(options.data_dir / "postgres") as url:
            yield url


def _check_port_free(port: int) -> None:
    with socket.socket() as probe:
        # Bind as uvicorn does: connections a stopped stack left in TIME-WAIT do not
        # hold the port, only a socket still listening on it does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {HOST} is already in use") from None
            raise CliError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None


def _prepare_data_dir(data_dir: Path) -> None:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / ".write-test").touch()
        (data_dir / ".write-test").unlink()
    except OSError as exc:
        raise CliError(f"data folder {data_dir} is not writable: {exc.strerror}") from None


def _development_keys(directory: Path) -> Path:
    """The signing keys of a development stack: generated once, kept with its data."""
    if not any(directory.glob("*.pem")):
        generate_signing_key(directory, development=True)
    return directory


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # `taskstack up` handles SIGINT/SIGTERM itself, for every process it runs.
        yield


async def _serve(options: UpOptions, database: URL, smtp_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    env = {
        **os.environ,
        "DATABASE_URL": database.render_as_string(hide_password=False),
        "ENVIRONMENT": "development",
        "LOG_LEVEL": options.log_level,
        "AUTH_SIGNING_KEYS_DIR": str(_development_keys(options.data_dir / "keys")),
        # Tokens name the gateway as their issuer; tasks fetches the JWKS from auth directly.
        "TOKEN_ISSUER": f"http://{HOST}:{options.port}",
        "JWKS_URL": f"http://{HOST}:{options.service_ports['auth']}/.well-known/jwks.json",
        # Auth's mail goes to the development sink, which keeps it under the data folder.
        "SMTP_HOST": HOST,
        "SMTP_PORT": str(smtp_port),
        "SMTP_SECURITY": "none",
        "PUBLIC_URL": f"http://{HOST}:{options.port}",
        # Account events (a deleted account's tasks) go straight to tasks' internal endpoint.
        "AUTH_EVENTS_URL": (
            f"http://{HOST}:{options.service_ports['tasks']}/internal/account-events"
        ),
    }
    children: dict[str, asyncio.subprocess.Process] = {}
    streams: list[asyncio.Task[None]] = []
    gateway = _Server(
        uvicorn.Config(
            DevGateway(
                [
                    (prefix, f"http://{HOST}:{options.service_ports[service.name]}")
                    for service in SERVICES
                    for prefix in service.prefixes
                ]
            ),
            host=HOST,
            port=options.port,
            log_level="warning",
            **SERVER_OPTIONS,
        )
    )
    gateway_task: asyncio.Task[None] | None = None
    try:
        deadline = loop.time() + READY_TIMEOUT
        # One after the other, each ready before the next starts: tasks loads
        # auth's keys as it starts, and would warn that auth did not answer.
        for service in SERVICES:
            process = await _start_service(service, options, env)
            children[service.name] = process
            assert process.stdout is not None
            streams.append(
                asyncio.create_task(_stream(service.name, process.stdout, options.log_lines))
            )
            port = options.service_ports[service.name]
            await _wait_ready(service.name, process, port, stop, deadline)
            if stop.is_set():
                return
        listener = socket.create_server((HOST, options.port))
        gateway_task = asyncio.create_task(gateway.serve(sockets=[listener]))
        _print_banner(options, smtp_port)
        exited = [asyncio.create_task(p.wait()) for p in children.values()]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopped, *exited], return_when=asyncio.FIRST_COMPLETED)
        if stopped not in done:
            name = next(n for n, p in children.items() if p.returncode is not None)
            raise CliError(f"the {name} service exited with status {children[name].returncode}")
    finally:
        gateway.should_exit = True
        if gateway_task is not None:
            await gateway_task
        await _stop_all(children)
        for task in streams:
            await task
        print("taskstack: stopped", flush=True)


async def _start_service(
    service: Service, options: UpOptions, env: dict[str, str]
) -> asyncio.subprocess.Process:
    command = uvicorn_command(service.factory, host=HOST, port=options.service_ports[service.name])
    if options.reload:
        command += ["--reload", "--reload-dir", str(Path.cwd())]
    return await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its own process group: a terminal's Ctrl-C reaches only `taskstack up`,
        # which then stops each service in order, reloader children included.
        start_new_session=True,
    )


async def _stream(name: str, stream: asyncio.StreamReader, log_lines: LogLines) -> None:
    async for line in stream:
        sys.stdout.write(log_lines.format(name, line.decode(errors="replace").rstrip("\r\n")))
        sys.stdout.write("\n")
        sys.stdout.flush()


async def _wait_ready(
    name: str,
    process: asyncio.subprocess.Process,
    port: int,
    stop: asyncio.Event,
    deadline: float,
) -> None:
    url = f"http://{HOST}:{port}/readyz"
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while not stop.is_set():
            if process.returncode is not None:
                raise CliError(f"the {name} service exited with status {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise CliError(f"the {name} service was not ready within {READY_TIMEOUT:g} s")
            await asyncio.sleep(0.2)


async def _stop_all(children: dict[str, asyncio.subprocess.Process]) -> None:
    for process in children.values():
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in children.values():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        # Whatever is left of the group (a hung worker, a reloader's child) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _print_banner(options: UpOptions, smtp_port: int) -> None:
    gateway = f"http://{HOST}:{options.port}"
    lines = ["", "taskstack is up", f"  gateway       {gateway}"]
    for service in SERVICES:
        port = options.service_ports[service.name]
        lines += [
            f"  {service.name:<5} docs    {gateway}{service.docs_path}",
            f"  {service.name:<5} direct  http://{HOST}:{port}  (/livez, /readyz, /metrics)",
        ]
    lines += [
        f"  mail          smtp://{HOST}:{smtp_port}, kept in {mail_dir(options.data_dir)}"
        " (`taskstack mail` lists it)",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), flush=True)
