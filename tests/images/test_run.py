"""The images run as the chart's pod specs run them: the chart's user, a read-only root
with only its emptyDir mounts writable, no capabilities, no new privileges; the chart's
environment in production mode, against a real PostgreSQL."""

import concurrent.futures
import json
import time
import uuid

import httpx
import psycopg
import pytest

from taskstack.auth.keys import generate_signing_key
from taskstack.bench.processes import free_port
from tests.images import engine, workloads
from tests.images.conftest import (
    Deployed,
    Running,
    migrate,
    start_service,
)
from tests.images.engine import ServiceImages
from tests.support.auth import STRONG_PASSWORD, bearer

SERVICES = engine.SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_livez_and_readyz(service: str, running: Running) -> None:
    url = running.urls[service]
    assert httpx.get(f"{url}/livez", timeout=5).status_code == 200
    ready = httpx.get(f"{url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    logs = running.containers[service].logs()
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(r.get("service") == service for r in records), logs


def test_the_containers_run_with_the_pod_specs_restrictions(
    running: Running, deployed: Deployed
) -> None:
    pod = deployed.workload("Deployment", "auth").spec
    for container in running.containers.values():
        status = dict(
            line.split(":\t", 1)
            for line in engine.podman(
                "exec", container.name, "cat", "/proc/1/status"
            ).stdout.splitlines()
        )
        uid = str(pod["securityContext"]["runAsUser"])
        assert status["Uid"].split()[0] == uid and status["Gid"].split()[0] == uid
        assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == "0" * 16
        assert status["NoNewPrivs"] == "1"
        write = "import sys; open(sys.argv[1], 'w').write('x')"
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
        writable_dirs = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]
                         if m["name"] in empty_dirs]  # fmt: skip
        assert writable_dirs and mounts
        probes = [(f"{d}/probe", True) for d in writable_dirs]
        probes += [("/app/probe", False), ("/probe", False)]
        for path, writable in probes:
            result = engine.podman(
                "exec", container.name, "python3", "-c", write, path, check=False
            )
            assert (result.returncode == 0) == writable, (path, result.stderr)
            if not writable:
                assert "Read-only file system" in result.stderr


def test_the_migration_command_of_the_image_is_idempotent(
    running: Running, deployed: Deployed, service_images: ServiceImages
) -> None:
    for service in SERVICES:
        # The fixture's first run migrated; a second finds the schema at head.
        returncode, output = migrate(deployed, service_images, service)
        assert returncode == 0, output
        assert "at head" in output, output


def _user_token(auth_url: str) -> str:
    email = f"image-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=auth_url, timeout=30) as client:
        registered = client.post(
            "/v1/auth/register", json={"email": email, "password": STRONG_PASSWORD}
        )
        assert registered.status_code == 202, registered.text
        token = client.post(
            "/v1/auth/token",
            data={"grant_type": "password", "username": email, "password": STRONG_PASSWORD},
        )
        assert token.status_code == 200, token.text
        access: str = token.json()["access_token"]
        return access


def test_sigterm_to_pid_1_drains_the_request_in_flight_within_the_grace_period(
    running: Running, deployed: Deployed, service_images: ServiceImages
) -> None:
    """A PATCH held in flight by a row lock survives SIGTERM; the container then exits,
    cleanly, before the pod's grace period (less its preStop sleep) runs out."""
    pod = deployed.workload("Deployment", "tasks").spec
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    headers = bearer(_user_token(running.urls["auth"]))
    dying, url = start_service(deployed, service_images, "tasks", port=free_port())
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            created = client.post("/v1/tasks", json={"title": "before"}, headers=headers)
            assert created.status_code == 201, created.text
            task = created.json()["id"]
            with psycopg.connect(deployed.secrets.values["DATABASE_URL"]) as lock:
                lock.execute("SELECT id FROM tasks.task WHERE id = %s FOR UPDATE", (task,))
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    patch = pool.submit(
                        client.patch, f"/v1/tasks/{task}", json={"title": "after"}, headers=headers
                    )
                    _wait_for_lock_waiter(lock)
                    dying.signal("TERM")
                    signalled = time.monotonic()
                    time.sleep(2)
                    assert dying.running(), "it waits for the request in flight"
                    lock.rollback()
                    answer = patch.result(timeout=30)
                returncode = dying.wait(timeout=grace)
                exited = time.monotonic() - signalled
        logs = dying.logs()
    finally:
        dying.remove()
    assert answer.status_code == 200 and answer.json()["title"] == "after", answer.text
    # PID 1: the kernel ignores the signal uvicorn re-raises after its clean shutdown,
    # so a clean exit is status 0 (a forced one would be 137).
    assert returncode == 0, logs
    assert 2 <= exited < grace - pre_stop, exited
    assert "Application shutdown complete" in logs
    assert "graceful shutdown exceeded" not in logs


def _wait_for_lock_waiter(lock: psycopg.Connection) -> None:
    """Until another session waits on a lock (the PATCH, blocked by ours)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(lock.info.dsn, password=lock.info.password, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0] >= 1:
                return
            time.sleep(0.05)
    raise AssertionError("the PATCH never reached the locked row")


@pytest.mark.parametrize(
    ("service", "variable", "value", "refusal"),
    [
        ("auth", "AUTH_PASSWORD_PEPPER", "insecure-development-pepper", "AUTH_PASSWORD_PEPPER"),
        ("tasks", "TASKS_CURSOR_SECRET", "insecure-development-cursor", "TASKS_CURSOR_SECRET"),
        ("auth", "AUTH_SIGNING_KEY_ID", "development-key", "development key"),
    ],
    ids=["pepper", "cursor-secret", "signing-key"],
)
def test_production_mode_refuses_development_secrets(
    service: str,
    variable: str,
    value: str,
    refusal: str,
    deployed: Deployed,
    service_images: ServiceImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The values ci/minimal-values.yaml hands a development install, in production."""
    work = deployed.workload("Deployment", service)
    options = deployed.options(work)
    env = deployed.env(work) | {variable: value}
    if value == "development-key":
        keys = tmp_path_factory.mktemp("development-keys")
        env[variable] = generate_signing_key(keys, development=True)
        workloads.materialise_secret_volume(keys, 0o440, 10001)
        mount = workloads.signing_keys_mount(work)
        options = [o for o in options if not o.startswith("--volume=")]
        options.append(f"--volume={keys}:{mount}:ro")
    image = service_images.get(service)
    result = engine.run_once(image.name, options, env, image.command(), timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert refusal in output, output
    assert "Traceback" not in output  # one line naming what is wrong
    assert value not in output  # a secret is named, never shown
