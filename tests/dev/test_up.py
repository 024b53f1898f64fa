"""`taskstack up` as a new user runs it: a subprocess, embedded PostgreSQL, Ctrl-C to stop."""

import contextlib
import errno
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import httpx
import psutil
import pytest

TASKSTACK = str(Path(sys.executable).with_name("taskstack"))


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [TASKSTACK, "up", "--data-dir", str(tmp_path / "data"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
    )


def wait_for_gateway(process: subprocess.Popen[Any], url: str, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(f"{url}/v1/auth/openapi.json", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError("the gateway did not answer in time")


def test_up_serves_both_services_through_the_gateway_and_stops_cleanly(tmp_path: Path) -> None:
    gateway, auth, tasks = free_ports(3)
    process = start(
        tmp_path, "--port", str(gateway), "--auth-port", str(auth), "--tasks-port", str(tasks)
    )
    base = f"http://127.0.0.1:{gateway}"
    try:
        wait_for_gateway(process, base)
        descendants = psutil.Process(process.pid).children(recursive=True)
        postmaster = int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0])

        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/v1/auth/openapi.json").json()["info"]["title"] == "taskstack auth"
            assert client.get("/v1/tasks/openapi.json").json()["info"]["title"] == "taskstack tasks"
            for docs in ("/v1/auth/docs", "/v1/tasks/docs"):
                page = client.get(docs)
                assert page.status_code == 200 and "swagger-ui" in page.text
            # A client's first steps, through the gateway.
            credentials = {"email": "ada@example.com", "password": "correct horse battery staple"}
            assert client.post("/v1/auth/register", json=credentials).status_code == 202
            tokens = client.post(
                "/v1/auth/token",
                data={
                    "grant_type": "password",
                    "username": credentials["email"],
                    "password": credentials["password"],
                },
            ).json()
            me = client.get(
                "/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
            )
            assert me.json()["email"] == "ada@example.com"
            jwks = client.get("/.well-known/jwks.json").json()
            assert jwks["keys"][0]["kid"].startswith("insecure-development-")
            issuer = client.get("/.well-known/oauth-authorization-server").json()["issuer"]
            assert issuer == base
            # Health is for the kubelet only: the gateway does not route it.
            assert client.get("/livez").status_code == 404
            unauthorised = client.get("/v1/tasks", headers={b"X-Foo": "é".encode()})
            assert unauthorised.status_code == 401
            assert unauthorised.headers.get_list("server") == ["uvicorn"]
            assert len(unauthorised.headers.get_list("date")) == 1
            # A trailing slash is redirected to the gateway, not to the service's port.
            redirect = client.get("/v1/tasks/?limit=5")
            assert redirect.status_code == 307
            assert redirect.headers["location"] == f"{base}/v1/tasks?limit=5"
            signed_in = {"Authorization": f"Bearer {tokens['access_token']}"}
            created = client.post("/v1/tasks", json={"title": "try taskstack"}, headers=signed_in)
            assert created.status_code == 201
            listed = client.get("/v1/tasks", headers=signed_in).json()["items"]
            assert [task["title"] for task in listed] == ["try taskstack"]
        assert httpx.get(f"http://127.0.0.1:{auth}/readyz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{tasks}/readyz").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)

    assert process.returncode == 0, output
    assert f"gateway       {base}" in output
    assert "auth  | " in output and "tasks | " in output
    assert "taskstack: stopped" in output
    assert len(descendants) >= 2
    assert not [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert (
        not psutil.pid_exists(postmaster)
        or psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE
    )


def port_options(gateway: int, auth: int, tasks: int) -> list[str]:
    return ["--port", str(gateway), "--auth-port", str(auth), "--tasks-port", str(tasks)]


def test_up_starts_again_at_once_after_a_stop_that_served_traffic(tmp_path: Path) -> None:
    gateway, auth, tasks = free_ports(3)
    base = f"http://127.0.0.1:{gateway}"
    first = start(tmp_path, *port_options(gateway, auth, tasks))
    # The client's connections stay open across the stop, so the servers close
    # them first and their side of each lingers in TIME-WAIT.
    with httpx.Client(base_url=base, timeout=10) as client:
        try:
            wait_for_gateway(first, base)
            for path in ("/v1/auth/openapi.json", "/.well-known/jwks.json", "/v1/tasks"):
                assert client.get(path).status_code in (200, 401)
        finally:
            os.killpg(first.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's process group
            output, _ = first.communicate(timeout=60)
    assert first.returncode == 0, output
    with socket.socket() as plain, pytest.raises(OSError, match="in use") as refused:
        plain.bind(("127.0.0.1", gateway))  # a bind without SO_REUSEADDR is refused for now
    assert refused.value.errno == errno.EADDRINUSE

    second = start(tmp_path, *port_options(gateway, auth, tasks))
    try:
        wait_for_gateway(second, base)
        assert httpx.get(f"{base}/v1/tasks/openapi.json").status_code == 200
    finally:
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=60)
    assert second.returncode == 0, output


def test_a_clean_start_logs_no_warning(tmp_path: Path) -> None:
    gateway, auth, tasks = free_ports(3)
    process = start(tmp_path, *port_options(gateway, auth, tasks))
    try:
        wait_for_gateway(process, f"http://127.0.0.1:{gateway}")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output

    lines = output.splitlines()
    records = [json.loads(line.split(" | ", 1)[1]) for line in lines if " | {" in line]
    started = {record["service"] for record in records if record["message"] == "started"}
    assert started == {"auth", "tasks"}
    assert [r for r in records if r["level"] not in ("DEBUG", "INFO")] == []
    others = [line for line in lines if " | {" not in line]
    assert [line for line in others if line.startswith(("WARNING", "ERROR", "CRITICAL"))] == []


def test_at_a_terminal_up_prints_one_readable_line_per_record(tmp_path: Path) -> None:
    gateway, auth, tasks = free_ports(3)
    base = f"http://127.0.0.1:{gateway}"
    ports = port_options(gateway, auth, tasks)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [TASKSTACK, "up", "--data-dir", str(tmp_path / "data"), *ports],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NO_COLOR")},
    )
    os.close(terminal)
    received = bytearray()

    def read_terminal() -> None:
        with contextlib.suppress(OSError):  # EIO once nothing holds the terminal open
            while chunk := os.read(controller, 65536):
                received.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        wait_for_gateway(process, base)
        response = httpx.get(f"{base}/v1/tasks", headers={"x-request-id": "at-a-terminal"})
        assert response.status_code == 401
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
        reader.join(30)
        os.close(controller)
    output = received.decode(errors="replace").replace("\r\n", "\n")
    assert process.returncode == 0, output

    lines = output.splitlines()
    [access] = [line for line in lines if "request_id=at-a-terminal" in line]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} tasks INFO    request GET /v1/tasks 401 [\d.]+ ms "
        r"request_id=at-a-terminal",
        click.unstyle(access),
    ), access
    assert click.style("tasks", fg="magenta") in access
    assert [line for line in lines if re.search(r"\| \{|^\{", click.unstyle(line))] == []
    assert "taskstack is up" in output and "taskstack: stopped" in output


def test_a_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = start(tmp_path, "--port", str(port))
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    assert output.strip() == f"taskstack: error: port {port} on 127.0.0.1 is already in use"


def test_an_unreachable_database_url_is_a_one_line_error(tmp_path: Path) -> None:
    [closed] = free_ports(1)
    gateway, auth, tasks = free_ports(3)
    process = start(
        tmp_path,
        "--database-url",
        f"postgresql://nobody:secret@127.0.0.1:{closed}/db",
        "--port",
        str(gateway),
        "--auth-port",
        str(auth),
        "--tasks-port",
        str(tasks),
    )
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2
    [line] = output.strip().splitlines()
    assert line.startswith(
        "taskstack: error: cannot reach the database at postgresql://nobody:***@"
    )
    assert "secret" not in output


def test_an_unwritable_data_folder_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    gateway, auth, tasks = free_ports(3)
    process = subprocess.run(
        [
            TASKSTACK,
            "up",
            "--data-dir",
            str(blocker / "data"),
            "--port",
            str(gateway),
            "--auth-port",
            str(auth),
            "--tasks-port",
            str(tasks),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2
    assert (
        process.stderr.strip()
        == f"taskstack: error: data folder {blocker / 'data'} is not writable: Not a directory"
    )
