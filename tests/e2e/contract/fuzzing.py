"""Drive schemathesis' engine (what `st run` runs) and keep what a test asserts on."""

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.engine import events, from_schema
from schemathesis.engine.statistic import Statistic


@dataclass
class FuzzResult:
    operations: list[str]
    checks: list[str]
    cases_by_phase: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.cases_by_phase.values())


def fuzz(schema_url: str, config: dict[str, Any]) -> FuzzResult:
    schema = schemathesis.openapi.from_url(schema_url, config=SchemathesisConfig.from_dict(config))
    operations = sorted(
        result.ok().label for result in schema.get_all_operations() if isinstance(result, Ok)
    )
    load_all_checks()  # every built-in check is enabled unless the config says otherwise
    result = FuzzResult(operations, CHECKS.get_all_names())
    statistic = Statistic()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.is_test_scenario:
            statistic.on_scenario_finished(event.recorder)
            result.cases_by_phase[event.phase.value] += len(event.recorder.cases)
        elif isinstance(event, events.NonFatalError):
            result.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            result.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            result.failures.extend(f"run: {f.title}: {f.message}" for f in event.failures)
    for extraction in statistic.extraction_failures:
        result.errors.append(
            f"link {extraction.source} -> {extraction.target}: "
            f"{extraction.parameter_name} = {extraction.expression} could not be resolved"
        )
    for label, groups in statistic.failures.items():
        for group in groups.values():
            response = group.response
            answer = f"{response.status_code} {response.content[:400]!r}" if response else "-"
            sample = _shorten(group.code_sample or "")
            for failure in group.failures:
                result.failures.append(
                    f"{label}: {failure.title}: {_shorten(failure.message)}\n"
                    f"    request: {sample}\n    response: {answer}"
                )
    return result


def _shorten(text: str, limit: int = 600) -> str:
    text = re.sub(r"(.)\1{20,}", lambda m: f"{m.group(1)}x{len(m.group(0))}", text)
    return text if len(text) <= limit else text[:limit] + "..."
