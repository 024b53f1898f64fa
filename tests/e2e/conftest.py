"""End-to-end fixtures: a private PostgreSQL cluster, stacks behind nginx, the report."""

import contextlib
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import PrivateCluster, private_cluster
from tests.e2e.harness import Stack, run_stack
from tests.e2e.report import Reliability, reliability_of, write_report

E2E_DIR = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    reliability_of(item.config).settle(item.nodeid, report.outcome)
    return report


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # The module-scoped fixture keeps its value for the rest of its module.
    leaving = nextitem is None or (
        nextitem.path != item.path and "stack" not in getattr(nextitem, "fixturenames", ())
    )
    if leaving and (shared := item.config.stash.get(SHARED_STACK, None)):
        shared.close()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    write_report(config, terminalreporter)


@pytest.fixture(scope="session")
def reliability(pytestconfig: pytest.Config) -> Reliability:
    """``reliability.record(item, title, figure)``: one line of the report per issue item."""
    return reliability_of(pytestconfig)


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[PrivateCluster]:
    """A PostgreSQL server of the e2e suite's own: fault tests stop and restart it."""
    with private_cluster() as server:
        try:
            yield server
        finally:
            # Whatever way the session ends, the shared stack goes before its database.
            if shared := pytestconfig.stash.get(SHARED_STACK, None):
                shared.close()


class SharedStack:
    """The stack consecutive tests share; stopped when the next test does not ask for it."""

    def __init__(self, cluster: PrivateCluster) -> None:
        self.cluster = cluster
        self._running: contextlib.ExitStack | None = None
        self._stack: Stack | None = None

    def get(self) -> Stack:
        stack = self._stack
        if stack and any(p.process.poll() is not None for p in stack.processes()):
            self.close()  # a test stopped a replica after all
        if self._stack is None:
            self._running = contextlib.ExitStack()
            # No JWKS refetch cooldown: a token with an unknown key id makes tasks
            # fetch auth's JWKS within the request (the journey follows that trace).
            env = {"JWKS_REFETCH_COOLDOWN_SECONDS": "0"}
            self._stack = self._running.enter_context(run_stack(self.cluster, tasks_env=env))
        return self._stack

    def close(self) -> None:
        if self._running is not None:
            self._running.close()
        self._running = self._stack = None


SHARED_STACK = pytest.StashKey[SharedStack]()


@pytest.fixture(scope="module")
def stack(cluster: PrivateCluster, pytestconfig: pytest.Config) -> Stack:
    """One auth and one tasks replica behind nginx, on a fresh database.

    Consecutive tests that use it share it (tests make their own users): do not
    stop its processes or its database; start your own with ``run_stack`` for that.
    """
    if SHARED_STACK not in pytestconfig.stash:
        pytestconfig.stash[SHARED_STACK] = SharedStack(cluster)
    return pytestconfig.stash[SHARED_STACK].get()
