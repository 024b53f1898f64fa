"""Both images build from the one Dockerfile with buildah; what they hold, listed file by
file; the dev image has every path the Tiltfile's live update syncs."""

import os
import re
from pathlib import Path

import pytest

from tests.deploy import dockerfile, tilt
from tests.deploy.conftest import dockerfile_of
from tests.deploy.test_images import NEVER_IN_AN_IMAGE
from tests.deploy.tilt import as_call
from tests.images import engine
from tests.images.engine import Image, ServiceImages

SERVICES = engine.SERVICES
# What a build uses and a runtime needs not (the base's own package manager, dpkg/apt, stays:
# the public python:3.11-slim has it too).
BUILD_TOOLS = {"uv", "uvx", "pip", "pip3", "gcc", "cc", "c++", "make", "git"}


def files(root: Path) -> set[str]:
    """Every path under ``root`` (an image's root filesystem), as absolute image paths."""
    found = set()
    for directory, dirnames, filenames in os.walk(root):
        relative = "/" + os.path.relpath(directory, root).removeprefix(".").lstrip("/")
        for name in dirnames + filenames:
            found.add(f"{relative.rstrip('/')}/{name}")
    return found


def distribution_names(paths: set[str]) -> set[str]:
    names = set()
    for path in paths:
        if match := re.fullmatch(
            r"/app/\.venv/lib/python[\d.]+/site-packages/([^/]+)\.dist-info", path
        ):
            names.add(re.sub(r"[-_.]+", "-", match[1].rsplit("-", 1)[0]).lower())
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_the_dockerfile_builds_each_service(service: str, service_images: ServiceImages) -> None:
    image = service_images.get(service)
    parsed = dockerfile_of(service).final
    config = image.config
    assert config["Labels"]["org.opencontainers.image.title"] == f"taskstack-{service}"
    assert config["User"] == parsed.all("USER")[-1] == "10001:10001"
    assert image.command() == parsed.command()
    assert image.env()["UVICORN_APP"] == f"taskstack.{service}.main:create_app"
    assert config["WorkingDir"] == "/app"
    built = service_images.built[(service, "runtime")]
    # One layer over the base: the environment the build stage made, nothing else.
    assert built.layers == built.base_layers + 1, service_images.report()
    assert built.size < 500e6, service_images.report()


@pytest.mark.parametrize("service", SERVICES)
def test_the_runtime_image_holds_no_build_tools_dev_dependencies_or_tests(
    service: str, service_images: ServiceImages
) -> None:
    image = service_images.get(service)
    base = Image(engine.python_base(), service, "base")
    with base.mounted() as base_root:
        base_files = files(base_root)
    with image.mounted() as root:
        image_files = files(root)
    added = image_files - base_files
    # Everything the Dockerfile adds lies in the service's environment.
    assert added and all(p == "/app" or p.startswith("/app/.venv") for p in added), sorted(
        p for p in added if not p.startswith("/app/.venv")
    )
    assert {p for p in image_files if p.count("/") == 2 and p.startswith("/app/")} == {"/app/.venv"}
    # No build tool on any PATH directory of the image.
    path_dirs = image.env()["PATH"].split(":")
    tools = {p for p in image_files if p.rsplit("/", 1)[0] in path_dirs}
    assert not {t for t in tools if t.rsplit("/", 1)[1] in BUILD_TOOLS}
    # Run-time distributions only; no source tree, no tests.
    installed = distribution_names(added)
    other = next(s for s in SERVICES if s != service)
    assert {"taskstack-common", f"taskstack-{service}", "uvicorn"} <= installed
    assert not NEVER_IN_AN_IMAGE & installed and f"taskstack-{other}" not in installed
    assert not {"pip", "setuptools", "wheel"} & installed
    site = next(p for p in added if re.fullmatch(r"/app/\.venv/lib/python[\d.]+/site-packages", p))
    assert f"{site}/taskstack/{service}/main.py" in added
    assert not [p for p in added if re.search(r"/(tests?|testing)/|/conftest\.py$", p)
                and "/taskstack/" in p]  # fmt: skip
    assert not [p for p in added if p.endswith(("pyproject.toml", "uv.lock"))]
    assert not [p for p in added if "/taskstack/dev/" in p or p.endswith("/Dockerfile")]


@pytest.mark.parametrize("service", SERVICES)
def test_the_dev_image_has_every_path_tilt_syncs(
    service: str, service_images: ServiceImages
) -> None:
    (build,) = [
        c for c in tilt.evaluate().of("docker_build") if c.args[0] == f"taskstack-{service}"
    ]
    parsed = dockerfile.parse(engine.ROOT / build.kwargs["dockerfile"], build.kwargs["build_args"])
    assert build.kwargs["target"] in parsed.stages
    assert build.kwargs["build_args"] == {"SERVICE": service}
    image = service_images.get(service, build.kwargs["target"])
    steps = [as_call(step) for step in build.kwargs["live_update"]]
    syncs = {s.args[0]: s.args[1] for s in steps if s.builtin == "sync"}
    (run,) = [s for s in steps if s.builtin == "run"]
    with image.mounted() as root:
        for local, remote in syncs.items():
            in_image = root / remote.lstrip("/")
            assert in_image.exists(), f"sync({local!r}, {remote!r}): not in the dev image"
            assert in_image.is_dir() == (engine.ROOT / local).is_dir(), remote
            # Tilt copies as the image's user: it must own what it overwrites.
            assert in_image.stat().st_uid == 10001, remote
        # The run step's programs and the file it touches.
        touched = re.search(r"touch (\S+)", run.args[0])
        assert touched and (root / touched[1].lstrip("/")).is_file()
        path_dirs = image.env()["PATH"].split(":")
        assert any((root / d.lstrip("/") / "uv").is_file() for d in path_dirs)
        assert (root / "app/.venv/bin/uvicorn").is_file()
