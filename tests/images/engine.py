"""buildah and podman (with runc) as the tests use them: the local base images, the
services' images built from the Dockerfile, and containers run as the chart runs them.

Every command gets ``CONTAINERS_CONF`` pointing at this package's containers.conf (the
test machines need it; nothing under /etc is touched). The public base images cannot be
pulled here, so the Dockerfile's ``PYTHON_IMAGE`` and ``UV_IMAGE`` build arguments name
two local images instead, built once per machine and kept (their tag is a hash of their
recipe):

- ``localhost/taskstack-test-python``: Debian bookworm's python3 (3.11) from Debian's
  packages (mmdebstrap), with the standard PATH and this machine's CA bundle (its
  egress may re-sign TLS, and uv fetches the locked wheels during the build);
- ``localhost/taskstack-test-uv``: the uv binary of this workspace's environment at /uv.
"""

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.tools import require

ROOT = Path(__file__).parents[2]
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
SERVICES = ("auth", "tasks")

DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "ca-certificates")
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CA_BUNDLE_IN_IMAGE = "/etc/ssl/certs/ca-certificates.crt"
PYTHON_BASE = "localhost/taskstack-test-python"
UV_BASE = "localhost/taskstack-test-uv"
# The chart's image names with image.registry=localhost: localhost/taskstack-<service>:<tag>.
REGISTRY = "localhost"
BUILD_TIMEOUT = 600


def engine_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run(
    program: str,
    *args: str,
    timeout: float = 120,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``program`` (podman, buildah, mmdebstrap) with ``args``; raises with its output when
    it fails and ``check``."""
    result = subprocess.run(
        [require_engine(program), *args],
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{program} {' '.join(args[:3])}... failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def require_engine(program: str) -> str:
    # Literal names, so tests/test_tools.py sees each program the suite needs.
    if program == "podman":
        return require("podman")
    if program == "buildah":
        return require("buildah")
    if program == "mmdebstrap":
        return require("mmdebstrap")
    raise ValueError(program)


def podman(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    require("runc")  # the runtime containers.conf names
    return run("podman", *args, **kwargs)


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


# ---- the local base images, cached per machine by a hash of their recipe


def host_ca_bundle() -> Path | None:
    """The CA bundle this machine trusts (its TLS egress may depend on it)."""
    candidate = Path(os.environ.get("SSL_CERT_FILE") or CA_BUNDLE_IN_IMAGE)
    return candidate if candidate.is_file() else None


def python_base_recipe() -> dict[str, Any]:
    ca = host_ca_bundle()
    return {
        "suite": DEBIAN_SUITE,
        "variant": "minbase",
        "packages": list(DEBIAN_PACKAGES),
        "path": STANDARD_PATH,
        "ca_bundle_sha256": hashlib.sha256(ca.read_bytes()).hexdigest() if ca else None,
    }


def recipe_tag(recipe: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def python_base() -> str:
    """Debian's python3 as a base image (mmdebstrap, about 30 s the first time)."""
    recipe = python_base_recipe()
    image = f"{PYTHON_BASE}:{recipe_tag(recipe)}"
    if image_exists(image):
        return image
    with tempfile.TemporaryDirectory(prefix="taskstack-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        hooks = []
        if ca := host_ca_bundle():
            hooks = [f"--customize-hook=upload {ca} {CA_BUNDLE_IN_IMAGE}"]
        run(
            "mmdebstrap", "--quiet", "--variant=minbase",
            f"--include={','.join(DEBIAN_PACKAGES)}", *hooks, DEBIAN_SUITE, str(tar),
            timeout=BUILD_TIMEOUT,
        )  # fmt: skip
        changes = [f"ENV PATH={STANDARD_PATH}"]
        if host_ca_bundle():
            # uv uses its own roots unless told; Python's ssl reads it too.
            changes.append(f"ENV SSL_CERT_FILE={CA_BUNDLE_IN_IMAGE}")
        podman("import", *(f"--change={c}" for c in changes), str(tar), image, timeout=300)
    return image


def uv_executable() -> Path:
    """The uv binary of this environment (`uv run` sets UV to it; a shim is no binary)."""
    candidates = [os.environ.get("UV"), shutil.which("uv")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            with Path(candidate).open("rb") as binary:
                if binary.read(4) == b"\x7fELF":
                    return Path(candidate)
    raise AssertionError(f"no uv binary among {candidates}")


@functools.cache
def uv_base() -> str:
    """An image holding only /uv, as ghcr.io/astral-sh/uv does."""
    binary = uv_executable().read_bytes()
    image = f"{UV_BASE}:{hashlib.sha256(binary).hexdigest()[:16]}"
    if image_exists(image):
        return image
    with tempfile.TemporaryDirectory(prefix="taskstack-uv-") as tmp:
        tar = Path(tmp) / "uv.tar"
        with tarfile.open(tar, "w") as archive:
            info = tarfile.TarInfo("uv")
            info.size, info.mode = len(binary), 0o755
            archive.addfile(info, io.BytesIO(binary))
        podman("import", str(tar), image, timeout=120)
    return image


# ---- the services' images


@dataclass(frozen=True)
class Image:
    name: str
    service: str
    target: str

    def inspect(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(podman("image", "inspect", self.name).stdout)
        return found[0]

    @property
    def size(self) -> int:
        return int(self.inspect()["Size"])

    @property
    def layers(self) -> list[str]:
        layers: list[str] = self.inspect()["RootFS"]["Layers"]
        return layers

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.inspect()["Config"]
        return config

    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env", []))

    def command(self) -> list[str]:
        command: list[str] = self.config["Cmd"]
        return command

    @contextlib.contextmanager
    def mounted(self) -> Iterator[Path]:
        """The image's root filesystem, read from the host (podman image mount)."""
        root = Path(podman("image", "mount", self.name).stdout.strip())
        try:
            yield root
        finally:
            podman("image", "unmount", self.name, check=False)


def build_args(service: str) -> dict[str, str]:
    return {"SERVICE": service, "PYTHON_IMAGE": python_base(), "UV_IMAGE": uv_base()}


def build(service: str, target: str, tag: str) -> Image:
    """``buildah bud`` of the Dockerfile for ``service`` at ``target`` (runtime or dev)."""
    repository = f"{REGISTRY}/taskstack-{service}" + ("" if target == "runtime" else f"-{target}")
    name = f"{repository}:{tag}"
    args = [f"--build-arg={key}={value}" for key, value in build_args(service).items()]
    run(
        "buildah", "bud", "--isolation=chroot", "--pull=never", "--layers=false", "--quiet",
        *args, f"--target={target}", f"--tag={name}", "--file=Dockerfile", str(ROOT),
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    remove_stage_containers(uv_base())
    return Image(name, service, target)


def remove_stage_containers(image: str) -> None:
    """buildah 1.28 keeps the working container of a stage that is only a COPY --from
    source (``FROM ${UV_IMAGE} AS uv``); --force-rm would remove that stage's image, which
    is the base image itself. So remove those containers, and only those."""
    listed = json.loads(run("buildah", "containers", "--json").stdout or "null") or []
    stale = [c["id"] for c in listed if c.get("imagename") == image]
    if stale:
        run("buildah", "rm", *stale, check=False)


def remove_images(images: Sequence[Image]) -> None:
    if images:
        podman("rmi", "--force", *(image.name for image in images), check=False)


def new_tag() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


# ---- containers


def chart_run_options(pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """`podman run` options for what the chart's pod spec asks: its user and group, a
    read-only root with each emptyDir mount a tmpfs, dropped capabilities, no new
    privileges."""
    pod_security = pod.get("securityContext", {})
    security = container.get("securityContext", {})
    options = []
    if "runAsUser" in pod_security:
        options.append(f"--user={pod_security['runAsUser']}:{pod_security.get('runAsGroup', 0)}")
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
        options.append("--read-only-tmpfs=false")
    options += [f"--cap-drop={cap}" for cap in security.get("capabilities", {}).get("drop", [])]
    if security.get("allowPrivilegeEscalation") is False:
        options.append("--security-opt=no-new-privileges")
    empty_dirs = {
        volume["name"]: volume["emptyDir"] for volume in pod["volumes"] if "emptyDir" in volume
    }
    for mount in container.get("volumeMounts", []):
        if mount["name"] in empty_dirs:
            size = empty_dirs[mount["name"]].get("sizeLimit", "64Mi").replace("Mi", "m")
            options.append(f"--tmpfs={mount['mountPath']}:rw,size={size},mode=1777")
    return options


@dataclass
class Container:
    """A container started with ``podman run --detach``; removed by ``remove``."""

    name: str

    def inspect(self) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(podman("inspect", self.name).stdout)
        return found[0]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.inspect()["State"]
        return state

    def running(self) -> bool:
        return bool(self.state()["Running"])

    def exit_code(self) -> int | None:
        state = self.state()
        return None if state["Running"] or state["Status"] == "created" else int(state["ExitCode"])

    def signal(self, name: str = "TERM") -> None:
        podman("kill", f"--signal={name}", self.name)

    def wait(self, timeout: float) -> int:
        """The exit code, once the container has exited (TimeoutError after ``timeout``)."""
        result = podman("wait", self.name, timeout=timeout)
        return int(result.stdout.strip().splitlines()[-1])

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", self.name, check=False)


def start(
    image: str, options: Sequence[str], env: Mapping[str, str], command: Sequence[str] = ()
) -> Container:
    name = f"taskstack-test-{uuid.uuid4().hex[:10]}"
    env_options = [f"--env={key}={value}" for key, value in env.items()]
    podman(
        "run", "--detach", f"--name={name}", "--network=host", *options, *env_options,
        image, *command,
    )  # fmt: skip
    return Container(name)


def run_once(
    image: str,
    options: Sequence[str],
    env: Mapping[str, str],
    command: Sequence[str],
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm``: the command's exit status and output."""
    env_options = [f"--env={key}={value}" for key, value in env.items()]
    return podman(
        "run", "--rm", "--network=host", *options, *env_options, image, *command,
        timeout=timeout, check=False,
    )  # fmt: skip


# ---- the images of one test run


@dataclass(frozen=True)
class Built:
    image: Image
    seconds: float
    size: int
    layers: int
    base_layers: int


class ServiceImages:
    """Each service's image per Dockerfile target, built on first use and removed by
    ``close`` (the cached base images stay)."""

    def __init__(self) -> None:
        self.tag = new_tag()
        self.built: dict[tuple[str, str], Built] = {}

    def get(self, service: str, target: str = "runtime") -> Image:
        key = (service, target)
        if key not in self.built:
            base = Image(python_base(), service, "base")
            uv_base()
            started = time.monotonic()
            image = build(service, target, self.tag)
            self.built[key] = Built(
                image, time.monotonic() - started, image.size, len(image.layers), len(base.layers)
            )
        return self.built[key].image

    def report(self) -> list[str]:
        return [
            f"{b.image.name} ({b.image.target}): {b.size / 1e6:.0f} MB, {b.layers} layers "
            f"({b.layers - b.base_layers} of its own over the base's {b.base_layers}); "
            f"built in {b.seconds:.0f} s"
            for b in self.built.values()
        ]

    def close(self) -> None:
        remove_images([b.image for b in self.built.values()])
