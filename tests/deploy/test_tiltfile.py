"""The Tiltfile, evaluated with stand-ins for Tilt's built-ins, against the chart it deploys."""

import functools
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.deploy import chart, dockerfile, tilt
from tests.deploy.tilt import Call, Tiltfile, as_call

ROOT = Path(__file__).parent.parent.parent
SERVICES = ("auth", "tasks")


@functools.cache
def tiltfile() -> Tiltfile:
    return tilt.evaluate()


GENERATED = ".taskstack/"  # what the Tiltfile's local() commands write: ignored by git


@functools.cache
def local_outputs() -> Path:
    """A directory in which the Tiltfile's local() commands have run, as in a checkout."""
    directory = Path(tempfile.mkdtemp(prefix="taskstack-tilt-"))
    for call in tiltfile().of("local"):
        words = shlex.split(call.args[0])
        assert words[:2] == ["uv", "run"]  # the project's own environment: this one
        program = str(Path(sys.executable).with_name(words[2]))
        subprocess.run([program, *words[3:]], cwd=directory, check=True, capture_output=True)
    return directory


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of two values files: maps key by key, anything else replaced."""
    result = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def tilt_values() -> dict[str, Any]:
    (call,) = tiltfile().of("helm")
    assert not call.kwargs.get("set")
    values: dict[str, Any] = {}
    for path in call.kwargs.get("values", []):
        source = local_outputs() / path if path.startswith(GENERATED) else ROOT / path
        values = merged(values, chart.load_values(source))
    return values


@functools.cache
def tilt_rendering() -> chart.Rendering:
    """The chart as the Tiltfile's helm() call renders it."""
    (call,) = tiltfile().of("helm")
    assert (ROOT / call.arg(0, "pathToChartDir")).resolve() == chart.CHART
    assert call.kwargs["name"] == chart.RELEASE
    return chart.render(tilt_values())


def plain_manifests() -> list[dict[str, Any]]:
    """The objects of the Tiltfile's other k8s_yaml files."""
    objects = []
    for call in tiltfile().of("k8s_yaml"):
        source = call.args[0]
        if isinstance(source, str):
            objects += [d for d in yaml.safe_load_all((ROOT / source).read_text()) if d]
    return objects


def builds() -> dict[str, Call]:
    return {c.args[0]: c for c in tiltfile().of("docker_build")}


def test_every_path_it_names_exists() -> None:
    paths: list[str] = []
    for call in tiltfile().of("k8s_yaml"):
        if isinstance(call.args[0], str):
            paths.append(call.args[0])
    for call in tiltfile().of("helm"):
        paths += [call.args[0], *call.kwargs.get("values", [])]
    for call in tiltfile().of("docker_build"):
        paths += [call.args[1], call.kwargs["dockerfile"], *call.kwargs["only"]]
    for call in tiltfile().of("sync"):
        paths.append(call.args[0])
    for call in tiltfile().of("run"):
        paths += call.kwargs.get("trigger", [])
    assert paths
    missing = [p for p in paths if not (ROOT / p).exists() and not (local_outputs() / p).exists()]
    assert not missing


def test_the_signing_key_is_generated_on_this_machine_and_never_committed() -> None:
    """No key in the repository: `tilt up` makes one the first time, in a git-ignored
    directory, and hands it to the chart; the next run keeps it (tokens stay valid)."""
    (generate,) = tiltfile().of("local")
    (call,) = tiltfile().of("helm")
    generated = [p for p in call.kwargs["values"] if p.startswith(GENERATED)]
    assert generated and all(p in generate.args[0] for p in generated)
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", *generated], check=False
    )
    assert ignored.returncode == 0
    assert "signingKeys" not in chart.load_values(ROOT / "deploy/tilt/values.yaml")["auth"]

    rendering = tilt_rendering()
    config = rendering.named("ConfigMap", "taskstack-auth")["data"]
    kid = config["AUTH_SIGNING_KEY_ID"]
    assert kid.startswith("insecure-development-")  # refused by a production service
    secret = rendering.named("Secret", "taskstack-auth-signing-keys")["stringData"]
    pem = (local_outputs() / ".taskstack/tilt/keys" / f"{kid}.pem").read_text()
    assert secret[f"{kid}.pem"] == pem
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    values_file = local_outputs() / generated[0]
    before = values_file.stat().st_mtime_ns
    subprocess.run(
        [str(Path(sys.executable).with_name("taskstack")), *shlex.split(generate.args[0])[3:]],
        cwd=local_outputs(),
        check=True,
        capture_output=True,
    )
    assert values_file.stat().st_mtime_ns == before  # unchanged, so Tilt does not reload


def test_the_chart_is_deployed_with_the_tilt_values() -> None:
    (deployed,) = [c for c in tiltfile().of("k8s_yaml") if not isinstance(c.args[0], str)]
    assert as_call(deployed.args[0]).builtin == "helm"
    values = tilt_values()
    chart.chart().validate_schema(values)
    assert values["environment"] == "development"


def test_each_image_is_the_one_the_chart_runs() -> None:
    rendering = tilt_rendering()
    images = {
        container["image"]
        for _, pod in rendering.workloads()
        for container in pod["spec"]["containers"]
    }
    repositories = {image.rsplit(":", 1)[0] for image in images}
    assert set(builds()) == {f"taskstack-{s}" for s in SERVICES}
    # Tilt replaces an image reference whose name equals the docker_build's (any tag).
    assert set(builds()) == repositories


def parsed_dockerfile(build: Call) -> dockerfile.Dockerfile:
    """The Dockerfile as this docker_build reads it, with its build arguments."""
    return dockerfile.parse(ROOT / build.kwargs["dockerfile"], build.kwargs.get("build_args"))


@pytest.mark.parametrize("service", SERVICES)
def test_builds_the_dev_stage_of_the_one_dockerfile_for_each_service(service: str) -> None:
    build = builds()[f"taskstack-{service}"]
    assert build.args[1] == "."
    assert build.kwargs["dockerfile"] == "Dockerfile"
    assert build.kwargs["build_args"] == {"SERVICE": service}
    parsed = parsed_dockerfile(build)
    assert build.kwargs["target"] in parsed.stages
    # `only` lets in what the Dockerfile copies, and the Dockerfile copies nothing else.
    only = build.kwargs["only"]
    copied = []
    for stage in parsed.stages.values():
        for args in stage.all("COPY"):
            words = args.split()
            if not any(w.startswith("--from") for w in words):
                copied += words[:-1]
    for source in copied:
        assert any(source == o or source.startswith(o.rstrip("/") + "/") for o in only), source


@pytest.mark.parametrize("service", SERVICES)
def test_live_update_targets_the_image_working_directory(service: str) -> None:
    build = builds()[f"taskstack-{service}"]
    parsed = parsed_dockerfile(build)
    target = parsed.stage(build.kwargs["target"])
    workdir = (target.all("WORKDIR") or parsed.stage(target.base).all("WORKDIR"))[-1]
    steps = [as_call(step) for step in build.kwargs["live_update"]]
    syncs = [s for s in steps if s.builtin == "sync"]
    runs = [s for s in steps if s.builtin == "run"]
    assert syncs and runs
    synced = {s.args[0]: s.args[1] for s in syncs}
    for local, remote in synced.items():
        # Each path lands where the Dockerfile put it, under the working directory.
        assert remote == f"{workdir}/{local}"
        assert any(
            local == o or local.startswith(o + "/") or o.startswith(local + "/")
            for o in build.kwargs["only"]
        )
    # The service's and the common library's sources, and the lock.
    assert {"libs/common", f"services/{service}", "uv.lock"} <= synced.keys()
    # The dev stage restarts uvicorn when those sources change: each synced source tree
    # lies under a watched directory. Watching all of services/ watches this service only,
    # as the image holds no other.
    command = target.command()
    assert "--reload" in command
    reload_dirs = {command[i + 1] for i, word in enumerate(command) if word == "--reload-dir"}
    for sources in ("libs/common/src", f"services/{service}/src"):
        assert any(sources == d or sources.startswith(d + "/") for d in reload_dirs), sources
    copied = [args.split()[0] for args in parsed.stage("build").all("COPY") if "--from" not in args]
    assert [c for c in copied if c.startswith("services/")] == [f"services/{service}"]
    # A changed lock re-syncs the environment (in the working directory), then restarts.
    (run,) = runs
    assert "uv.lock" in run.kwargs["trigger"]
    assert run.args[0].startswith(
        f"cd {workdir} && uv sync --frozen --no-dev --package taskstack-{service}"
    )
    assert f"touch {workdir}/services/{service}/src/taskstack/{service}/main.py" in run.args[0]


def test_every_resource_names_a_workload_that_exists() -> None:
    workloads = {
        o["metadata"]["name"]
        for o in [*tilt_rendering().objects, *plain_manifests()]
        if o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")
    }
    resources = [c.args[0] for c in tiltfile().of("k8s_resource")]
    assert set(resources) == workloads  # each workload configured, each name real
    known = set(resources) | {c.args[0] for c in tiltfile().of("local_resource")}
    for call in tiltfile().of("k8s_resource"):
        assert set(call.kwargs.get("resource_deps", [])) <= known


def test_resources_start_in_order() -> None:
    deps = {
        c.args[0]: set(c.kwargs.get("resource_deps", [])) for c in tiltfile().of("k8s_resource")
    }
    for service in SERVICES:
        assert deps[f"taskstack-{service}-migrate"] == {"taskstack-postgres"}
        assert f"taskstack-{service}-migrate" in deps[f"taskstack-{service}"]
    assert "taskstack-auth" in deps["taskstack-tasks"]  # tasks loads auth's JWKS at start


def port_forwards() -> list[tuple[int, int, str]]:
    found = []
    for call in tiltfile().of("k8s_resource"):
        for forward in call.kwargs.get("port_forwards", []):
            if isinstance(forward, str):
                local, _, remote = forward.partition(":")
                found.append((int(local), int(remote), call.args[0]))
            else:
                spec = as_call(forward)
                found.append((int(spec.args[0]), int(spec.args[1]), call.args[0]))
    return found


def test_port_forwards_do_not_collide_and_reach_a_container_port() -> None:
    forwards = port_forwards()
    locals_ = [local for local, _, _ in forwards]
    assert len(locals_) == len(set(locals_))
    containers = {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"]
        for o in [*tilt_rendering().objects, *plain_manifests()]
        if o["kind"] == "Deployment"
    }
    for _, remote, resource in forwards:
        ports = {p["containerPort"] for c in containers[resource] for p in c.get("ports", [])}
        assert remote in ports, resource
    assert {r for _, _, r in forwards} == {
        "taskstack-postgres",
        "taskstack-auth",
        "taskstack-tasks",
    }


def test_every_resource_is_labelled() -> None:
    for call in [*tiltfile().of("k8s_resource"), *tiltfile().of("local_resource")]:
        assert call.kwargs.get("labels"), call.args[0]


def test_the_test_suite_runs_on_demand() -> None:
    (tests,) = tiltfile().of("local_resource")
    assert tests.kwargs["cmd"] == "scripts/test"
    assert tests.kwargs["trigger_mode"] == "TRIGGER_MODE_MANUAL"
    assert tests.kwargs["auto_init"] is False


def test_the_database_matches_the_development_values() -> None:
    (postgres,) = [o for o in plain_manifests() if o["kind"] == "Deployment"]
    (service,) = [o for o in plain_manifests() if o["kind"] == "Service"]
    env = {
        e["name"]: e["value"] for e in postgres["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    values = chart.load_values(ROOT / "deploy/tilt/values.yaml")
    expected = (
        f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/{env['POSTGRES_DB']}"
    )
    assert values["database"]["url"] == expected
    # The NetworkPolicy lets the services reach it.
    labels = postgres["spec"]["template"]["metadata"]["labels"]
    assert values["networkPolicy"]["database"]["podLabels"].items() <= labels.items()
    image = postgres["spec"]["template"]["spec"]["containers"][0]["image"]
    assert not image.endswith(":latest") and ":" in image


def test_the_development_guide_lists_the_forwarded_ports() -> None:
    guide = (ROOT / "docs" / "development.md").read_text()
    section = guide[guide.index("## `tilt up`") :]
    for local, _, _ in port_forwards():
        assert f"localhost:{local}" in section
