"""Servers under test: one uvicorn worker each, pinned to a CPU, measured through /proc."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from taskstack.dev.errors import CliError
from taskstack.dev.services import uvicorn_command

HOST = "127.0.0.1"
SERVER_CPU = 0
LOAD_CPU = 1
START_TIMEOUT = 60.0
IDLE_SAMPLE_SECONDS = 0.3
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process, every thread included."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of proc(5), counted after the ")" that ends the command name.
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for {self.name}")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def warnings(self, most: int) -> list[str]:
        """The server's last ``most`` log lines at WARNING or above (its level in the runs)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if line.strip()][-most:]

    def wait_ready(self, path: str = "/readyz") -> None:
        if problem := poll_ready(self.process, self.url + path, START_TIMEOUT):
            raise CliError(f"the {self.name} server {problem}:\n{self.log_tail()}")

    def wait_idle(self, within: float = 15.0) -> None:
        """Wait (at most ``within`` seconds) until the server stops using CPU: a warm-up's
        connections close with requests in flight (sign-ins still queued for hashing), and
        their work must not count against the measurement that follows."""
        deadline = time.monotonic() + within
        used = self.cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(IDLE_SAMPLE_SECONDS)
            now = self.cpu_seconds()
            if now - used < IDLE_SAMPLE_SECONDS / 10:
                return
            used = now

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period, to the server's process group."""
        process = self.process
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def poll_ready(process: subprocess.Popen[bytes], url: str, timeout: float) -> str | None:
    """Poll ``url`` until it answers 200 (None); or say why not: the process exited, or
    ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            return f"exited with status {process.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return None
        if time.monotonic() > deadline:
            return f"was not ready within {timeout:g} s"
        time.sleep(0.1)


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU ``cpu`` has spent on any process since boot (proc(5), /proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name == f"cpu{cpu}":
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, ticks[:8])
            return (user + nice + system + irq + softirq + steal) / _TICKS
    raise RuntimeError(f"no CPU {cpu} in /proc/stat")


def launch(name: str, factory: str, env: dict[str, str], log_dir: Path) -> Server:
    """Start ``uvicorn --factory``: one worker, pinned to the server CPU from its first instruction.

    Pinned at exec, not once started, so that the service sees at start-up the
    CPUs it will run on (as in a pod with a CPU limit), whatever it sizes by them.
    """
    port = free_port()
    options = ["--workers", "1", "--no-access-log", "--log-level", "warning"]
    service = uvicorn_command(factory, host=HOST, port=port, options=options)
    command = ["taskset", "-c", str(SERVER_CPU), *service]
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, process, port, log_path)
