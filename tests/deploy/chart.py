"""Render the taskstack chart offline, as `helm template` does (Helm's engine, helm-python-sdk)."""

import functools
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
