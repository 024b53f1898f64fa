"""The chart's workloads for the images built in this test run: rendered with the CI
values that fit one machine (ci/minimal-values.yaml) in production mode, with the
Secrets an operator creates (existingSecret) and the images under localhost/."""

import copy
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskstack.auth.keys import generate_signing_key
from tests.deploy import chart
from tests.deploy.chart import Manifest, Rendering

MINIMAL_VALUES = chart.CHART / "ci/minimal-values.yaml"
ISSUER = "https://taskstack.test"
# The Secrets the chart reads in production (existingSecret), as an operator names them.
SECRET_NAMES = {
    "database": "taskstack-database",
    "auth": "taskstack-auth",
    "signingKeys": "taskstack-signing-keys",
    "tasks": "taskstack-tasks",
}


def values(
    tag: str,
    *,
    key_id: str,
    jwks_url: str | None = None,
    tasks_replicas: int = 1,
    extra_env: dict[str, str] | None = None,
    otlp_endpoint: str = "",
) -> dict[str, Any]:
    """ci/minimal-values.yaml, in production mode: Secrets by name, the local images,
    the migration Jobs on, and the gateway on loopback as the trusted proxy."""
    out = chart.load_values(MINIMAL_VALUES)
    out["auth"].pop("passwordPepper")
    out["tasks"].pop("cursorSecret")
    out["auth"]["existingSecret"] = SECRET_NAMES["auth"]
    out["auth"]["signingKeys"] = {"existingSecret": SECRET_NAMES["signingKeys"], "keyId": key_id}
    out["tasks"]["existingSecret"] = SECRET_NAMES["tasks"]
    out["tasks"]["replicaCount"] = tasks_replicas
    if jwks_url:
        out["tasks"]["jwksUrl"] = jwks_url
    out |= {
        "environment": "production",
        "publicUrl": ISSUER,
        "image": {"registry": "localhost", "tag": tag, "pullPolicy": "Never"},
        "forwardedAllowIps": "127.0.0.1",
        "migrations": {"enabled": True},
        # The test's PostgreSQL listens on loopback, a trusted network; production's
        # refusal of a URL that does not verify the server is tested against a TLS
        # server in tests/e2e/test_database_tls.py.
        "database": {"existingSecret": SECRET_NAMES["database"], "trustedNetwork": True},
        "extraEnv": extra_env or {},
        "telemetry": {**out.get("telemetry", {}), "otlpEndpoint": otlp_endpoint},
    }
    return out


@dataclass
class SecretValues:
    """What the operator's Secrets hold: each key's value, and the signing keys' files."""

    keys_dir: Path
    key_id: str
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, directory: Path, database_url: str) -> "SecretValues":
        directory.mkdir(parents=True, exist_ok=True)
        key_id = generate_signing_key(directory)
        return cls(
            directory,
            key_id,
            {
                "DATABASE_URL": database_url,
                "AUTH_PASSWORD_PEPPER": secrets.token_urlsafe(32),
                "TASKS_CURSOR_SECRET": secrets.token_urlsafe(32),
            },
        )


@dataclass(frozen=True)
class Workload:
    """One pod template of the rendering: a Deployment's or a migration Job's."""

    kind: str
    name: str
    service: str
    pod: Manifest  # the pod template: metadata and spec

    @property
    def spec(self) -> Manifest:
        spec: Manifest = self.pod["spec"]
        return spec

    @property
    def container(self) -> Manifest:
        container: Manifest
        (container,) = self.spec["containers"]
        return container

    @property
    def image(self) -> str:
        image: str = self.container["image"]
        return image


def workloads(rendering: Rendering) -> Iterator[Workload]:
    for manifest, pod in rendering.workloads():
        if manifest["kind"] not in ("Deployment", "Job"):
            continue  # the chart's test pods (helm test) run curl, not our images
        component = manifest["metadata"]["labels"]["app.kubernetes.io/component"]
        service = component.removesuffix("-migrate")
        yield Workload(manifest["kind"], manifest["metadata"]["name"], service, copy.deepcopy(pod))


def workload(rendering: Rendering, kind: str, service: str) -> Workload:
    (found,) = [w for w in workloads(rendering) if w.kind == kind and w.service == service]
    return found


def environment(
    rendering: Rendering, work: Workload, secret_values: SecretValues, pod_name: str
) -> dict[str, str]:
    """The container's environment as the kubelet would set it: its ConfigMap, then its
    own env (field references resolved, Secret keys looked up)."""
    env: dict[str, str] = {}
    for source in work.container.get("envFrom", []):
        config_map = rendering.named("ConfigMap", source["configMapRef"]["name"])
        env |= config_map.get("data", {})
    for item in work.container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        reference = item["valueFrom"]
        if "fieldRef" in reference:
            env[item["name"]] = field_value(reference["fieldRef"]["fieldPath"], pod_name)
        elif "secretKeyRef" in reference:
            key = reference["secretKeyRef"]["key"]
            if key in secret_values.values:
                env[item["name"]] = secret_values.values[key]
            else:
                assert reference["secretKeyRef"].get("optional"), f"no value for {key}"
    return env


def field_value(path: str, pod_name: str) -> str:
    return {
        "metadata.name": pod_name,
        "metadata.namespace": chart.NAMESPACE,
        "spec.nodeName": "localhost",
    }[path]


def signing_keys_mount(work: Workload) -> str | None:
    """Where the pod mounts the signing-keys Secret (auth only)."""
    secret_volumes = {v["name"] for v in work.spec.get("volumes", []) if "secret" in v}
    for mount in work.container.get("volumeMounts", []):
        if mount["name"] in secret_volumes:
            path: str = mount["mountPath"]
            return path
    return None


def command_on_port(command: list[str], port: int) -> list[str]:
    """The image's CMD listening on ``port``: with host networking each pod needs its own."""
    argv = list(command)
    argv[argv.index("--port") + 1] = str(port)
    return argv


def materialise_secret_volume(directory: Path, mode: int, group: int) -> None:
    """The files of a Secret volume as the kubelet writes them: ``defaultMode``, owned
    by the pod's fsGroup."""
    directory.chmod(0o755)
    for path in directory.iterdir():
        path.chmod(mode)
        if os.geteuid() == 0:
            os.chown(path, 0, group)
