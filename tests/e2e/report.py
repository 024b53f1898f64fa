"""The reliability report: one figure per item of the end-to-end suite, printed and kept as JSON.

Tests record their figure with the ``reliability`` fixture; the e2e conftest
prints the report at the end of the run and writes it to
``RELIABILITY_REPORT`` (default ``<rootdir>/.reports/reliability-report.json``).
"""

import contextlib
import datetime
import json
import os
import platform
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "RELIABILITY_REPORT"


@dataclass
class Figure:
    item: int
    title: str
    figure: str
    test: str  # the node id of the test that recorded it
    outcome: str = "passed"
    notes: list[str] = field(default_factory=list)  # printed under the item's line


@dataclass
class Reliability:
    figures: list[Figure] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # node id → outcome so far

    def record(
        self, item: int, title: str, figure: str, *, notes: Sequence[str] = (), label: str = ""
    ) -> None:
        """Record the figure of issue item ``item``; the test's outcome is added when it ends.
        ``label`` names the stack it was measured on when that is not the processes'
        (``images``: the chart's pods), and leads the figure."""
        if label:
            figure = f"[{label}] {figure}"
        # pytest keeps "<node id> (<phase>)" here while a test runs.
        current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        self.figures.append(Figure(item, title, figure, current, notes=list(notes)))

    def settle(self, test: str, outcome: str) -> None:
        """A phase of ``test`` ended with ``outcome``; one failed phase fails its figures."""
        if self.outcomes.get(test) != "failed":
            self.outcomes[test] = outcome
        for figure in self.figures:
            if figure.test == test:
                figure.outcome = self.outcomes[test]

    def lines(self) -> list[str]:
        by_item: dict[int, list[Figure]] = {}
        for figure in self.figures:
            by_item.setdefault(figure.item, []).append(figure)
        lines = []
        for item in sorted(by_item):
            figures = by_item[item]
            failed = [f for f in figures if f.outcome != "passed"]
            mark = "FAILED " if failed else ""
            text = "; ".join(f.figure for f in figures)
            lines.append(f"{item:>2}. {figures[0].title}: {mark}{text}")
            lines.extend(f"      {note}" for f in figures for note in f.notes)
        return lines

    def document(self, command: str) -> dict[str, Any]:
        return {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "command": command,
            "items": [asdict(figure) for figure in sorted(self.figures, key=lambda f: f.item)],
            "lines": self.lines(),
        }


def machine() -> str:
    return (
        f"{platform.node()}: {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}"
    )


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or platform.machine()


RELIABILITY = pytest.StashKey[Reliability]()


def reliability_of(config: pytest.Config) -> Reliability:
    if RELIABILITY not in config.stash:
        config.stash[RELIABILITY] = Reliability()
    return config.stash[RELIABILITY]


def report_path(config: pytest.Config) -> Path:
    if configured := os.environ.get(REPORT_ENV):
        return Path(configured)
    return Path(config.rootpath) / ".reports" / "reliability-report.json"


def write_report(config: pytest.Config, terminal: Any) -> None:
    reliability = reliability_of(config)
    if not reliability.figures:
        return
    terminal.section("Reliability report")
    command = shlex.join(["uv", "run", "pytest", *config.invocation_params.args])
    document = reliability.document(command)
    terminal.write_line(f"{document['date']} on {document['machine']}; {command}")
    for line in document["lines"]:
        terminal.write_line(line)
    path = report_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    terminal.write_line(f"written to {path}")
