"""The services' images run one container at a time, as the chart's pod specs run them."""

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from taskstack.bench.processes import free_port
from tests.deploy import chart
from tests.deploy.chart import Rendering
from tests.e2e.cluster import private_cluster
from tests.images import engine, workloads
from tests.images.engine import Container, Image, ServiceImages
from tests.images.workloads import SecretValues, Workload, materialise_secret_volume
from tests.support.postgres import PostgresServer

STARTUP_TIMEOUT = 60.0
IMAGES_DIR = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if IMAGES_DIR in item.path.parents:
            item.add_marker(pytest.mark.images)


@pytest.fixture(scope="session")
def tcp_database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database the containers reach over TCP on loopback: on the suite's server
    (CI's is at 127.0.0.1:5432), or, when that one is a Unix socket, on a cluster of
    the tests' own."""
    if postgres.url.host and not postgres.url.host.startswith("/"):
        yield postgres.libpq(postgres.create_database("taskstack_images"))
        return
    with private_cluster() as cluster:
        yield cluster.libpq(cluster.create_database("taskstack_images"))


@pytest.fixture(scope="session")
def secret_values(tmp_path_factory: pytest.TempPathFactory, tcp_database: str) -> SecretValues:
    values = SecretValues.create(tmp_path_factory.mktemp("signing-keys"), tcp_database)
    materialise_secret_volume(values.keys_dir, 0o440, 10001)
    return values


@dataclass(frozen=True)
class Deployed:
    """The chart rendered for this run's images, and the port each service listens on."""

    rendering: Rendering
    secrets: SecretValues
    ports: dict[str, int]

    def workload(self, kind: str, service: str) -> Workload:
        return workloads.workload(self.rendering, kind, service)

    def options(self, work: Workload) -> list[str]:
        options = engine.chart_run_options(work.spec, work.container)
        if mount := workloads.signing_keys_mount(work):
            options.append(f"--volume={self.secrets.keys_dir}:{mount}:ro")
        return options

    def env(self, work: Workload) -> dict[str, str]:
        return workloads.environment(self.rendering, work, self.secrets, f"{work.name}-0")


@pytest.fixture(scope="session")
def deployed(service_images: ServiceImages, secret_values: SecretValues) -> Deployed:
    ports = {service: free_port() for service in engine.SERVICES}
    values = workloads.values(
        service_images.tag,
        key_id=secret_values.key_id,
        jwks_url=f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
    )
    return Deployed(chart.render(values), secret_values, ports)


def runtime_image(service_images: ServiceImages, service: str) -> Image:
    return service_images.get(service, "runtime")


def migrate(deployed: Deployed, service_images: ServiceImages, service: str) -> tuple[int, str]:
    job = deployed.workload("Job", service)
    image = runtime_image(service_images, service)
    assert job.image == image.name
    result = engine.run_once(
        image.name, deployed.options(job), deployed.env(job), job.container["command"]
    )
    return result.returncode, result.stdout + result.stderr


def start_service(
    deployed: Deployed, service_images: ServiceImages, service: str, port: int | None = None
) -> tuple[Container, str]:
    """The service's Deployment's container, on its port; returns once /readyz says 200."""
    work = deployed.workload("Deployment", service)
    image = runtime_image(service_images, service)
    assert work.image == image.name
    port = port or deployed.ports[service]
    command = workloads.command_on_port(image.command(), port)
    container = engine.start(image.name, deployed.options(work), deployed.env(work), command)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(container, url)
    except BaseException:
        container.remove()
        raise
    return container, url


def wait_ready(container: Container, url: str, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not container.running():
            raise AssertionError(f"exited with {container.exit_code()}:\n{container.logs()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready:\n{container.logs()}")


@dataclass
class Running:
    containers: dict[str, Container]
    urls: dict[str, str]
    migrations: dict[str, tuple[int, str]]


@pytest.fixture(scope="module")
def running(deployed: Deployed, service_images: ServiceImages) -> Iterator[Running]:
    """Both services migrated by their Job's command and running: auth first (tasks
    reads its JWKS when it starts)."""
    started = Running({}, {}, {})
    try:
        for service in engine.SERVICES:
            started.migrations[service] = migrate(deployed, service_images, service)
            assert started.migrations[service][0] == 0, started.migrations[service][1]
        for service in engine.SERVICES:
            container, url = start_service(deployed, service_images, service)
            started.containers[service], started.urls[service] = container, url
        yield started
    finally:
        for container in reversed(started.containers.values()):
            container.remove()
