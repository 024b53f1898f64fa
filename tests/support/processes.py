"""Services as real processes: uvicorn in a subprocess, as a pod would run it."""

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from taskstack.bench.processes import free_port, poll_ready
from taskstack.dev.services import uvicorn_command

# uvicorn --timeout-graceful-shutdown of the test replicas.
SERVICE_GRACEFUL_SHUTDOWN = 10.0


@dataclass
class ServiceProcess:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_service(factory: str, env: dict[str, str], *, port: int | None = None) -> ServiceProcess:
    """Spawn ``uvicorn --factory <factory>`` with ``env`` on top of ours; do not wait for it."""
    port = port or free_port()
    with tempfile.NamedTemporaryFile(prefix="service-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            uvicorn_command(
                factory,
                host="127.0.0.1",
                port=port,
                options=["--timeout-graceful-shutdown", f"{SERVICE_GRACEFUL_SHUTDOWN:g}"],
            ),
            env={**os.environ, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServiceProcess(f"http://127.0.0.1:{port}", process, log_path)


def wait_ready(running: ServiceProcess, ready_path: str = "/livez", timeout: float = 60.0) -> None:
    """Return once ``ready_path`` answers 200; raise, with the log, if it exits or never does."""
    if problem := poll_ready(running.process, running.base_url + ready_path, timeout):
        raise RuntimeError(f"{running.base_url} {problem}:\n{running.log()}")


def stop_service(running: ServiceProcess, *, keep_log: bool = False) -> None:
    """SIGTERM, a bounded wait, then SIGKILL; the log file goes unless ``keep_log``."""
    process = running.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if not keep_log:
        running.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def service_process(
    factory: str,
    env: dict[str, str],
    *,
    port: int | None = None,
    ready_path: str = "/livez",
    startup_timeout: float = 60.0,
) -> Iterator[ServiceProcess]:
    """Run ``uvicorn --factory <factory>`` with ``env`` on top of ours; stop it with SIGTERM."""
    running = start_service(factory, env, port=port)
    try:
        wait_ready(running, ready_path, startup_timeout)
        yield running
    finally:
        stop_service(running)
