"""Render the taskstack chart offline, as `helm template` does (Helm's engine, helm-python-sdk)."""

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).parent.parent.parent
CHART = ROOT / "deploy/helm/taskstack"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
TILT_VALUES = ROOT / "deploy/tilt/values.yaml"
RELEASE = "taskstack"
NAMESPACE = "taskstack"
SERVICES = ("auth", "tasks")

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
# kubernetes-validate knows.
OLDEST_KUBERNETES = "1.29"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Rendering:
    """One `helm template`: the objects (hooks and test pods included) and NOTES.txt."""

    objects: tuple[Manifest, ...]
    notes: str

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def named(self, kind: str, name: str) -> Manifest:
        (found,) = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found

    def workloads(self) -> Iterator[tuple[Manifest, Manifest]]:
        """Each object that runs pods, with its pod template (a Pod is its own)."""
        for o in self.objects:
            if o["kind"] in ("Deployment", "Job"):
                yield o, o["spec"]["template"]
            elif o["kind"] == "Pod":
                yield o, o


@functools.cache
def chart() -> helm_python.Chart:
    helm_python.disable_logging()
    return helm_python.Chart.load(CHART)


def load_values(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return values


def render(values: dict[str, Any] | None = None) -> Rendering:
    manifests = chart().render(values=values or {}, name=RELEASE, namespace=NAMESPACE)
    objects: list[Manifest] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendering(tuple(objects), notes)


@functools.cache
def render_file(path: Path | None) -> Rendering:
    """The chart rendered with a values file (None: the defaults); cached per test run."""
    return render(load_values(path) if path else None)


def service_name(service: str) -> str:
    return f"{RELEASE}-{service}"


@dataclass(frozen=True)
class Pod:
    """What the kubelet knows of a pod and hands its containers through the Downward API."""

    name: str = "taskstack-auth-7d9f8-x2kq4"
    namespace: str = NAMESPACE
    node: str = "node-1"
    secrets: tuple[tuple[str, str, str], ...] = ()  # (Secret, key, value)

    def field(self, path: str) -> str:
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "spec.nodeName": self.node,
        }
        return fields[path]

    def secret(self, name: str, key: str) -> str | None:
        return next((v for s, k, v in self.secrets if (s, k) == (name, key)), None)


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def container_environment(
    rendering: Rendering, workload: Manifest, pod: Pod | None = None
) -> dict[str, str]:
    """The environment the kubelet would give the workload's first container: its
    ConfigMaps, then its env in order, with the Downward API's values and $(VAR) references
    to variables defined before them expanded (a reference to anything else stays as
    written, as Kubernetes leaves it)."""
    pod = pod or Pod()
    template = workload["spec"]["template"]
    container = template["spec"]["containers"][0]
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config = rendering.named("ConfigMap", source["configMapRef"]["name"])
        environment.update(config.get("data", {}))
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = _REFERENCE.sub(
                lambda m: "$" if m[0] == "$$" else environment.get(m[1], m[0]),
                variable["value"],
            )
            continue
        source = variable["valueFrom"]
        if "fieldRef" in source:
            environment[variable["name"]] = pod.field(source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            environment[variable["name"]] = _resource_field(template, source["resourceFieldRef"])
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = pod.secret(ref["name"], ref["key"])
            if value is not None:
                environment[variable["name"]] = value
    return environment


def _resource_field(template: Manifest, ref: dict[str, Any]) -> str:
    """A container's CPU limit or request in units of the divisor, rounded up as the
    kubelet rounds it (a limit of 1500m with divisor 1 reads 2)."""
    (container,) = [c for c in template["spec"]["containers"] if c["name"] == ref["containerName"]]
    kind, resource = ref["resource"].split(".")
    assert resource == "cpu", "only CPU is resolved here"
    quantity = container["resources"][kind][resource]
    divisor = ref.get("divisor", "1")
    return str(math.ceil(cpu_millicores(quantity) / cpu_millicores(divisor)))


def cpu_millicores(quantity: str | int | float) -> int:
    text = str(quantity)
    if text.endswith("m"):
        return int(text[:-1])
    return math.ceil(float(text) * 1000)
