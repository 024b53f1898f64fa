"""End-to-end fixtures: a private PostgreSQL cluster, stacks behind nginx, the report."""

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


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    write_report(config, terminalreporter)


@pytest.fixture(scope="session")
def reliability(pytestconfig: pytest.Config) -> Reliability:
    """``reliability.record(item, title, figure)``: one line of the report per issue item."""
    return reliability_of(pytestconfig)


@pytest.fixture(scope="session")
def cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL server of the e2e suite's own: fault tests stop and restart it."""
    with private_cluster() as server:
        yield server


@pytest.fixture(scope="module")
def stack(cluster: PrivateCluster) -> Iterator[Stack]:
    """One auth and one tasks replica behind nginx, on a fresh database, for a module."""
    with run_stack(cluster) as running:
        yield running
