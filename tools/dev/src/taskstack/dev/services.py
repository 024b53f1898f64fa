"""The services that make up taskstack, as the developer tools start and route them."""

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from taskstack.auth.migrate import HISTORY as AUTH_HISTORY
from taskstack.common.migrations import MigrationHistory
from taskstack.tasks.migrate import HISTORY as TASKS_HISTORY


@dataclass(frozen=True)
class Service:
    name: str
    factory: str  # uvicorn --factory target
    prefixes: tuple[str, ...]  # public path prefixes the gateway routes to it, as the Ingress does
    history: MigrationHistory

    @property
    def docs_path(self) -> str:
        return f"{self.prefixes[0]}/docs"


SERVICES = (
    Service("auth", "taskstack.auth.main:create_app", ("/v1/auth", "/.well-known"), AUTH_HISTORY),
    Service("tasks", "taskstack.tasks.main:create_app", ("/v1/tasks",), TASKS_HISTORY),
)


# How every service process is served, wherever it runs (`taskstack up`, the
# tests' processes, the benchmark; the Dockerfile sets the same as UVICORN_*
# variables). asyncio's own event loop rather than uvloop: libuv accepts one
# connection per turn of its loop (libuv#3696), so a worker busy with requests
# left thousands of connects, health probes among them, waiting in the backlog
# for seconds; the selector loop accepts up to the backlog each turn. Open
# connections are bounded (each costs memory whether it sends
# anything or not), past the bound answered by LimitedConnections as the
# services answer an admission refusal; the backlog holds a burst of connects;
# keep-alive outlasts common load balancers' 60 s idle timeout, so the server
# never closes a connection the proxy is about to reuse.
SERVER_OPTIONS = (
    "--loop",
    "asyncio",
    "--http",
    "taskstack.common.connections:LimitedConnections",
    "--limit-concurrency",
    "4096",
    "--backlog",
    "2048",
    "--timeout-keep-alive",
    "65",
)


def uvicorn_command(
    factory: str, *, host: str, port: int, options: Sequence[str] = ()
) -> list[str]:
    """The command that runs one service's app in a uvicorn process of its own, with this
    interpreter (the developer's environment, where every service is installed), with
    SERVER_OPTIONS; ``options`` come after them, so they may override one."""
    command = [sys.executable, "-m", "uvicorn", "--factory", factory]
    return [*command, "--host", host, "--port", str(port), *SERVER_OPTIONS, *options]
