"""The whole system as separate processes: PostgreSQL, optional PgBouncer, replicas, nginx.

``run_stack`` starts auth and tasks replicas as real uvicorn processes behind
an nginx gateway that routes like the chart's Ingress; tests talk to
``stack.gateway`` with httpx, as a client would.
"""

import contextlib
import json
import signal
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol

import httpx
from sqlalchemy.engine import URL
from typing_extensions import TypeVar

from taskstack.auth.keys import generate_signing_key, load_signing_keys
from taskstack.bench.processes import free_port
from taskstack.dev.services import SERVICES
from tests.e2e.cluster import PrivateCluster
from tests.e2e.gateway import Gateway, nginx
from tests.e2e.pooler import Pooler, pgbouncer
from tests.support.auth import STRONG_PASSWORD, bearer, login, register
from tests.support.otlp import OtlpReceiver
from tests.support.processes import (
    SERVICE_GRACEFUL_SHUTDOWN,
    ServiceProcess,
    start_service,
    stop_service,
    wait_ready,
)
from tests.support.servers import serve
from tests.support.tokens import TokenMint

FACTORIES = {service.name: service.factory for service in SERVICES}
ROUTES = {prefix: service.name for service in SERVICES for prefix in service.prefixes}
# The services believe X-Forwarded-For only from the gateway's address.
GATEWAY_ADDRESS = "127.0.0.1"
STARTUP_TIMEOUT = 60.0


class ReplicaProcess(Protocol):
    """What the tests do to a replica's process: a ``subprocess.Popen``, or a container."""

    def send_signal(self, sig: int, /) -> None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class Replica(Protocol):
    @property
    def base_url(self) -> str: ...
    @property
    def process(self) -> ReplicaProcess: ...
    def log(self) -> str: ...


R = TypeVar("R", bound=Replica, default=ServiceProcess)


@dataclass
class Stack(Generic[R]):
    """The running system: processes by default (``run_stack``), or the chart's pods
    (``tests.e2e.pods.run_pods``, label "images")."""

    gateway: str
    postgres: PrivateCluster
    database: URL  # the direct URL of this stack's database
    auth: list[R]
    tasks: list[R]
    pgbouncer: Pooler | None
    nginx: Gateway
    keys_dir: Path
    spans: OtlpReceiver | None = None
    label: str = ""  # how the reliability report tells this stack's figures apart
    graceful_shutdown: float = SERVICE_GRACEFUL_SHUTDOWN  # uvicorn's, in seconds
    grace_period: float | None = None  # the pod's terminationGracePeriodSeconds, if any
    # The exit status of a replica that shut down cleanly after SIGTERM: uvicorn re-raises
    # the signal; as a container's PID 1 the kernel ignores it and uvicorn returns 0.
    clean_exit: int = -signal.SIGTERM
    _clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An HTTP client of the gateway (closed with the stack)."""
        client = httpx.Client(base_url=self.gateway, timeout=kwargs.pop("timeout", 30), **kwargs)
        self._clients.append(client)
        return client

    def processes(self) -> list[R]:
        return [*self.auth, *self.tasks]

    def logs(self, service: str) -> list[dict[str, Any]]:
        """Every JSON log record of every replica of ``service`` (``auth`` or ``tasks``)."""
        replicas = self.auth if service == "auth" else self.tasks
        return [record for replica in replicas for record in json_lines(replica.log())]

    def mint(self) -> TokenMint:
        """Signs with auth's real signing key, as auth does: for forged and attack tokens."""
        keys = load_signing_keys(self.keys_dir, None, production=False)
        return TokenMint(
            kid=keys.signing_kid, private_key=keys.keys[keys.signing_kid], issuer=self.gateway
        )

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def _service_env(
    service: str,
    replica: int,
    *,
    database: str,
    migration_database: str,
    pooled: bool,
    gateway: str,
    keys_dir: Path,
    otlp: str | None,
) -> dict[str, str]:
    env = {
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "INFO",
        "ACCESS_LOG": "true",
        "DATABASE_URL": database,
        "DATABASE_MIGRATION_URL": migration_database,
        "DATABASE_TRANSACTION_POOLER": "true" if pooled else "false",
        "TOKEN_ISSUER": gateway,
        "FORWARDED_ALLOW_IPS": GATEWAY_ADDRESS,
        "POD_NAME": f"{service}-{replica}",
        "OTEL_SDK_DISABLED": "false" if otlp else "true",
    }
    if otlp:
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    if service == "auth":
        env |= {
            "AUTH_SIGNING_KEYS_DIR": str(keys_dir),
            "AUTH_BCRYPT_COST": "4",
            # Every test client comes from one address; a test of the limit sets its own.
            "AUTH_REGISTRATIONS_PER_IP": "10000",
        }
    else:
        # As in the cluster: through a load-balanced address of auth, here the gateway's.
        env |= {
            "JWKS_URL": f"{gateway}/.well-known/jwks.json",
            # The load tests send a few users' requests far faster than a person would;
            # a test of the per-user limit sets its own.
            "TASKS_RATE_LIMIT_PER_MINUTE": "1000000",
        }
    return env


@contextlib.contextmanager
def run_stack(
    postgres: PrivateCluster,
    *,
    auth_replicas: int = 1,
    tasks_replicas: int = 1,
    pooled: bool = False,
    pooler_pool_size: int = 20,
    database: URL | None = None,
    env: Mapping[str, str] | None = None,
    auth_env: Mapping[str, str] | None = None,
    tasks_env: Mapping[str, str] | None = None,
    tracing: bool = True,
) -> Iterator[Stack]:
    """Start a stack on ``postgres`` (a fresh migrated database unless ``database`` is given).

    ``env`` applies to every replica, ``auth_env``/``tasks_env`` to one service's.
    With ``pooled``, the services reach PostgreSQL through PgBouncer in transaction
    mode (``pooler_pool_size`` server connections); migrations use the direct URL.
    """
    direct = database or postgres.migrated_database()
    with contextlib.ExitStack() as resources:
        keys_dir = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="keys-")))
        generate_signing_key(keys_dir)
        collector: OtlpReceiver | None = None
        otlp: str | None = None
        if tracing:
            collector = OtlpReceiver()
            otlp = resources.enter_context(serve(collector.app()))
        pooler = (
            resources.enter_context(pgbouncer(postgres, pool_size=pooler_pool_size))
            if pooled
            else None
        )
        services_url = pooler.url(direct) if pooler else direct
        ports = {
            "auth": [free_port() for _ in range(auth_replicas)],
            "tasks": [free_port() for _ in range(tasks_replicas)],
        }
        gateway_port = free_port()
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        upstreams = {
            name: [f"127.0.0.1:{port}" for port in service_ports]
            for name, service_ports in ports.items()
            if service_ports
        }
        routes = {prefix: name for prefix, name in ROUTES.items() if name in upstreams}
        gateway = resources.enter_context(nginx(upstreams, routes, port=gateway_port))

        started: dict[str, list[ServiceProcess]] = {"auth": [], "tasks": []}
        resources.callback(_stop_all, started)
        extra = {"auth": {**(env or {}), **(auth_env or {})}}
        extra["tasks"] = {**(env or {}), **(tasks_env or {})}
        # auth first: tasks is ready only once it has auth's JWKS.
        for name in ("auth", "tasks"):
            for replica, port in enumerate(ports[name]):
                service_env = _service_env(
                    name,
                    replica,
                    database=_render(services_url),
                    migration_database=_render(direct),
                    pooled=pooled,
                    gateway=gateway_url,
                    keys_dir=keys_dir,
                    otlp=otlp,
                )
                process = start_service(FACTORIES[name], service_env | extra[name], port=port)
                started[name].append(process)
            for process in started[name]:
                wait_ready(process, "/readyz", STARTUP_TIMEOUT)

        stack = Stack(
            gateway=gateway_url,
            postgres=postgres,
            database=direct,
            auth=started["auth"],
            tasks=started["tasks"],
            pgbouncer=pooler,
            nginx=gateway,
            keys_dir=keys_dir,
            spans=collector,
        )
        resources.callback(stack.close_clients)
        yield stack


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _stop_all(started: dict[str, list[ServiceProcess]]) -> None:
    """SIGTERM every replica at once, then wait for each (bounded, SIGKILL after)."""
    processes = [*started["tasks"], *started["auth"]]
    for running in processes:
        if running.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                running.process.send_signal(signal.SIGTERM)
    for running in processes:
        stop_service(running)


@dataclass
class User:
    email: str
    id: uuid.UUID
    access_token: str
    refresh_token: str
    password: str = STRONG_PASSWORD

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


def new_user(client: httpx.Client, prefix: str = "user") -> User:
    """Register a new account through the gateway and sign it in."""
    email = f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"
    registered = register(client, email)
    assert registered.status_code == 202, registered.text
    tokens = login(client, email)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    me = client.get("/v1/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    return User(
        email=email,
        id=uuid.UUID(me.json()["id"]),
        access_token=body["access_token"],
        refresh_token=body["refresh_token"],
    )
