"""The services as their images would run them, without a container engine.

The Dockerfile's build stage is replayed once per service and test run (see
dockerfile.py); the service then starts from that environment with the
image's own command and the configuration the chart gives it.
"""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.deploy import dockerfile
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.support.tokens import TokenMint

ROOT = Path(__file__).parent.parent.parent
DOCKERFILE = ROOT / "Dockerfile"
SERVICES = ("auth", "tasks")
ISSUER = "https://taskstack.test"


def dockerfile_of(service: str) -> dockerfile.Dockerfile:
    """The one Dockerfile as a build of ``service`` reads it (--build-arg SERVICE=...)."""
    return dockerfile.parse(DOCKERFILE, {"SERVICE": service})


def uv_binary() -> str:
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to itself
    assert uv, "uv is needed to replay the images' build stage"
    return uv


class Closures:
    """Each service's image environment, built on first use and kept for the test run."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._built: dict[str, dockerfile.Replay] = {}

    def __getitem__(self, service: str) -> dockerfile.Replay:
        if service not in self._built:
            root = self.base / service
            root.mkdir()
            self._built[service] = dockerfile.replay_build(
                dockerfile_of(service), root, uv=uv_binary()
            )
        return self._built[service]


@pytest.fixture(scope="session")
def closures(tmp_path_factory: pytest.TempPathFactory) -> Closures:
    return Closures(tmp_path_factory.mktemp("image-closures"))


@dataclass(frozen=True)
class ImageEnvironment:
    """What the chart hands each service: database URL, keys, pepper, JWKS URL, ..."""

    database_url: str
    keys_dir: Path
    key_id: str
    jwks_url: str

    def for_service(self, service: str) -> dict[str, str]:
        env = {
            "ENVIRONMENT": "production",
            "TOKEN_ISSUER": ISSUER,
            "TOKEN_AUDIENCE": "taskstack",
            "DATABASE_URL": self.database_url,
            # The test server listens on loopback, without TLS.
            "DATABASE_TRUSTED_NETWORK": "true",
            "DATABASE_POOL_SIZE": "2",
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
        }
        if service == "auth":
            env |= {
                "AUTH_SIGNING_KEYS_DIR": str(self.keys_dir),
                "AUTH_SIGNING_KEY_ID": self.key_id,
                "AUTH_PASSWORD_PEPPER": secrets.token_urlsafe(32),
            }
        else:
            env |= {"JWKS_URL": self.jwks_url, "TASKS_CURSOR_SECRET": secrets.token_urlsafe(32)}
        return env


@pytest.fixture(scope="session")
def image_environment(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImageEnvironment]:
    keys_dir = tmp_path_factory.mktemp("signing-keys")
    key_id = "closure-test"
    key = ec.generate_private_key(ec.SECP256R1())
    (keys_dir / f"{key_id}.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    jwks = TokenMint(kid=key_id, issuer=ISSUER).jwks()

    async def jwks_endpoint(_: Request) -> JSONResponse:
        return JSONResponse(jwks)

    jwks_app = Starlette(routes=[Route("/.well-known/jwks.json", jwks_endpoint)])
    database = postgres.libpq(postgres.create_database("taskstack_image"))
    with serve(jwks_app) as jwks_base:
        yield ImageEnvironment(database, keys_dir, key_id, f"{jwks_base}/.well-known/jwks.json")


@dataclass
class RunningService:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def image_command(replay: dockerfile.Replay, port: int) -> list[str]:
    """The runtime stage's CMD, bound to loopback on ``port`` instead of 0.0.0.0:8000."""
    command = replay.runtime.command()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command[0] = str(replay.executable(command[0]))
    return command


def run_image_command(
    replay: dockerfile.Replay, argv: list[str], env: dict[str, str], *, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command of the image (e.g. the migrate script) in its environment."""
    return subprocess.run(
        [str(replay.executable(argv[0])), *argv[1:]],
        cwd=replay.workdir,
        env=clean_env(replay, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_env(replay: dockerfile.Replay, env: dict[str, str]) -> dict[str, str]:
    """The image's environment plus ``env``: nothing inherited from the test process."""
    return {**replay.runtime_env(), "HOME": str(replay.root), "LANG": "C.UTF-8", **env}


def start_service(
    service: str, replay: dockerfile.Replay, env: dict[str, str], log: Path
) -> RunningService:
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            image_command(replay, port),
            cwd=replay.workdir,
            env=clean_env(replay, env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = RunningService(service, f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{service} exited with {process.returncode}:\n{running.output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{running.url}/readyz", timeout=2).status_code == 200:
                return running
        time.sleep(0.2)
    stop_service(running)
    raise AssertionError(f"{service} never became ready:\n{running.output()}")


def stop_service(running: RunningService, timeout: float = 30) -> int:
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()
    return running.process.returncode


@pytest.fixture(scope="session")
def image_services(
    closures: Closures,
    image_environment: ImageEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RunningService]]:
    """Both services, migrated and running from their image environments."""
    logs = tmp_path_factory.mktemp("image-logs")
    running: dict[str, RunningService] = {}
    try:
        for service in SERVICES:
            replay = closures[service]
            env = image_environment.for_service(service)
            migrated = run_image_command(replay, [f"taskstack-{service}-migrate"], env)
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            running[service] = start_service(service, replay, env, logs / f"{service}.log")
        yield running
    finally:
        for process in running.values():
            stop_service(process)
