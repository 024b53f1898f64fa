"""The chart's workloads as pods: ``podman kube play`` of what the chart renders, behind
nginx routing like the Ingress, on a database of the e2e cluster.

What a cluster would do and podman 4.3 does not, the test does the way the kubelet would,
and nothing else changes in the rendered pod specs:

- one host, one network: every pod gets ``hostNetwork: true`` and its own port (its
  image's CMD with ``--port`` changed; the probes name that port by number, as
  podman 4.3 refuses ``ports`` on the host network);
- a Deployment with N replicas becomes N Pods of its template, a migration Job a Pod
  of its template (``restartPolicy: Never``), run to completion before the services;
- ``metadata.namespace`` and ``spec.nodeName`` field references become their values;
- the operator's Secrets (existingSecret) are podman secrets for ``secretKeyRef`` (JSON
  of base64 values, the form podman reads), and the signing-keys Secret volume is a
  read-only ``hostPath`` directory with the Secret's files at ``defaultMode``, group
  fsGroup (podman 4.3 writes a Secret volume's files still base64-encoded);
- tasks reads auth's JWKS through the gateway (no cluster DNS for the Service name);
- the pod template's checksum annotations (which roll a Deployment when its
  configuration changes) are left out: podman 4.3 holds annotation values to the
  63-character limit of label values, and a sha256 is 64.
"""

import base64
import contextlib
import copy
import json
import signal as signals
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from taskstack.bench.processes import free_port
from tests.deploy import chart
from tests.e2e.cluster import PrivateCluster
from tests.e2e.gateway import nginx
from tests.e2e.harness import ROUTES, Stack
from tests.images import engine, workloads
from tests.images.engine import Container, ServiceImages
from tests.images.workloads import SecretValues, Workload
from tests.support.otlp import OtlpReceiver
from tests.support.servers import serve
from tests.support.tools import require

STARTUP_TIMEOUT = 90.0


class ContainerProcess:
    """A pod's container, with the part of ``subprocess.Popen`` the e2e tests use.

    SIGTERM is what the kubelet does to a pod it deletes: ``podman stop`` with the pod's
    grace period (SIGTERM, SIGKILL when it runs out), which also keeps the pod's
    ``restartPolicy: Always`` from starting the container again."""

    def __init__(self, container: Container, grace_period: float = 30) -> None:
        self.container = container
        self.grace_period = grace_period
        self.returncode: int | None = None
        self._stopping: subprocess.Popen[bytes] | None = None

    def send_signal(self, sig: int) -> None:
        if sig != signals.SIGTERM:
            self.container.signal(signals.Signals(sig).name.removeprefix("SIG"))
            return
        self._stopping = subprocess.Popen(
            [engine.require_engine("podman"), "stop", f"--time={self.grace_period:g}",
             self.container.name],
            env=engine.engine_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.container.exit_code()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 3600)
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.container.name, timeout or 0)
            time.sleep(0.05)
        if self._stopping is not None:
            self._stopping.wait(self.grace_period + 10)
        return code


@dataclass
class PodReplica:
    base_url: str
    process: ContainerProcess
    pod: str

    def log(self) -> str:
        return self.process.container.logs()


@dataclass
class PodSet:
    """What ``run_pods`` created, for its clean-up."""

    run: str
    directory: Path
    pods: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    def close(self) -> None:
        for pod in reversed(self.pods):
            engine.podman("pod", "rm", "--force", "--time=10", pod, check=False, timeout=60)
        if self.secrets:
            engine.podman("secret", "rm", *self.secrets, check=False)


def as_pod(
    work: Workload, name: str, run: str, keys_dir: Path, command: list[str] | None = None
) -> dict[str, Any]:
    """``work``'s pod template as a Pod for ``podman kube play`` (see the module's list);
    ``command``: the image's CMD on this pod's own port."""
    pod = copy.deepcopy(work.pod)
    spec = pod["spec"]
    spec["hostNetwork"] = True
    (container,) = spec["containers"]
    if command is not None:
        port = int(command[command.index("--port") + 1])
        container["args"] = command
        # On the host network podman 4.3 refuses container ports (it maps them): the
        # probes name the port by its number instead.
        container.pop("ports", None)
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                container[probe]["httpGet"]["port"] = port
    for item in container.get("env", []):
        reference = item.get("valueFrom", {})
        if "fieldRef" in reference and reference["fieldRef"]["fieldPath"] != "metadata.name":
            item.pop("valueFrom")
            item["value"] = workloads.field_value(reference["fieldRef"]["fieldPath"], name)
        elif "secretKeyRef" in reference:
            reference["secretKeyRef"]["name"] += f"-{run}"
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            volume.pop("secret")
            volume["hostPath"] = {"path": str(keys_dir), "type": "Directory"}
    metadata = {**pod["metadata"], "name": name}
    annotations = {
        key: value
        for key, value in metadata.pop("annotations", {}).items()
        if not key.startswith("checksum/")
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@contextlib.contextmanager
def run_pods(
    cluster: PrivateCluster,
    images: ServiceImages,
    *,
    tasks_replicas: int = 1,
) -> Iterator[Stack[PodReplica]]:
    """Migrate with the chart's Jobs, then run its Deployments, behind nginx."""
    require("catatonit")  # podman builds its pod infra image with it
    run = uuid.uuid4().hex[:8]
    database = cluster.create_database()
    gateway_port = free_port()
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    with contextlib.ExitStack() as resources:
        directory = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="pods-")))
        directory.chmod(0o755)
        secret_values = SecretValues.create(directory / "signing-keys", cluster.libpq(database))
        workloads.materialise_secret_volume(secret_values.keys_dir, 0o440, 10001)
        # Traces exported as the monitoring CI values do, to a receiver of the test's own:
        # with tracing on, every log record carries its trace id.
        collector = OtlpReceiver()
        otlp = resources.enter_context(serve(collector.app()))
        values = workloads.values(
            images.tag,
            key_id=secret_values.key_id,
            jwks_url=f"{gateway_url}/.well-known/jwks.json",
            tasks_replicas=tasks_replicas,
            # Every test client comes from one address (as in harness.run_stack).
            extra_env={"AUTH_REGISTRATIONS_PER_IP": "10000"},
            otlp_endpoint=otlp,
        )
        rendering = chart.render(values)
        for service in engine.SERVICES:
            images.get(service)  # built before anything runs
        pods = PodSet(run, directory)
        resources.callback(pods.close)
        _create_secrets(rendering, secret_values, pods)
        config_maps = rendering.of_kind("ConfigMap")

        def play(document: dict[str, Any]) -> None:
            name = document["metadata"]["name"]
            path = directory / f"{name}.yaml"
            path.write_text(yaml.safe_dump_all([*config_maps, document]))
            pods.pods.append(name)
            engine.podman("kube", "play", str(path), timeout=120)

        for service in engine.SERVICES:  # the Jobs' hook weights: auth, then tasks
            job = workloads.workload(rendering, "Job", service)
            name = f"{job.name}-{run}"
            play(as_pod(job, name, run, secret_values.keys_dir))
            migration = Container(f"{name}-{job.container['name']}")
            code = ContainerProcess(migration).wait(STARTUP_TIMEOUT)
            assert code == 0, f"{job.name} exited with {code}:\n{migration.logs()}"

        ports = {"auth": [free_port()], "tasks": [free_port() for _ in range(tasks_replicas)]}
        upstreams = {s: [f"127.0.0.1:{p}" for p in ports[s]] for s in engine.SERVICES}
        routed = resources.enter_context(nginx(upstreams, ROUTES, port=gateway_port))
        replicas: dict[str, list[PodReplica]] = {"auth": [], "tasks": []}
        for service in engine.SERVICES:  # auth first: tasks is ready once it has the JWKS
            deployment = workloads.workload(rendering, "Deployment", service)
            image = images.get(service)
            for n, port in enumerate(ports[service]):
                name = f"{deployment.name}-{n}-{run}"
                command = workloads.command_on_port(image.command(), port)
                play(as_pod(deployment, name, run, secret_values.keys_dir, command))
                container = Container(f"{name}-{deployment.container['name']}")
                grace = float(deployment.spec["terminationGracePeriodSeconds"])
                process = ContainerProcess(container, grace)
                replica = PodReplica(f"http://127.0.0.1:{port}", process, name)
                replicas[service].append(replica)
            for replica in replicas[service]:
                _wait_ready(replica)

        pod = workloads.workload(rendering, "Deployment", "tasks").spec
        command = images.get("tasks").command()
        stack: Stack[PodReplica] = Stack(
            gateway=gateway_url,
            postgres=cluster,
            database=database,
            auth=replicas["auth"],
            tasks=replicas["tasks"],
            pgbouncer=None,
            nginx=routed,
            keys_dir=secret_values.keys_dir,
            spans=collector,
            label="images",
            graceful_shutdown=float(command[command.index("--timeout-graceful-shutdown") + 1]),
            grace_period=float(pod["terminationGracePeriodSeconds"]),
            clean_exit=0,
        )
        resources.callback(stack.close_clients)
        yield stack


def _create_secrets(rendering: chart.Rendering, values: SecretValues, pods: PodSet) -> None:
    """Each Secret the pods read keys of, with those keys, as the operator created it."""
    wanted: dict[str, set[str]] = {}
    for work in workloads.workloads(rendering):
        for item in work.container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] in values.values:
                wanted.setdefault(ref["name"], set()).add(ref["key"])
    for name, keys in wanted.items():
        data = {k: base64.b64encode(values.values[k].encode()).decode() for k in sorted(keys)}
        secret = f"{name}-{pods.run}"
        engine.podman("secret", "create", secret, "-", input=json.dumps(data))
        pods.secrets.append(secret)


def _wait_ready(replica: PodReplica) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise AssertionError(f"{replica.pod} exited:\n{replica.log()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{replica.base_url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{replica.pod} never became ready:\n{replica.log()}")
