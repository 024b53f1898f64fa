"""Prometheus rules and Grafana dashboards under deploy/observability: they parse, the chart
packages exactly these files, and every PromQL expression names only metrics that the
running services really export (scraped from the image closure's processes)."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml

from tests.deploy import chart
from tests.deploy.conftest import RunningService

ROOT = Path(__file__).parent.parent.parent
OBSERVABILITY = ROOT / "deploy/observability"
RULE_FILES = sorted((OBSERVABILITY / "rules").glob("*.yaml"))
DASHBOARDS = sorted((OBSERVABILITY / "dashboards").glob("*.json"))
# Series Prometheus itself adds to every scrape target.
PROMETHEUS_SERIES = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}
# Grafana's built-in and dashboard variables, replaced before parsing.
GRAFANA_VARIABLE = re.compile(r"\$__\w+|\$\{[^}]+\}|\$\w+|\[\[\w+\]\]")


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


def dashboard_expressions(dashboard: dict[str, Any]) -> Iterator[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") != "query" or not isinstance(query, str):
            continue
        # label_values(<selector>, label) and query_result(<expr>) hold PromQL.
        for function in (r"label_values\((.*),\s*\w+\)", r"query_result\((.*)\)"):
            if match := re.fullmatch(rf"\s*{function}\s*", query, re.S):
                yield match[1]


def expressions() -> list[tuple[str, str]]:
    found = [(name, str(rule.get("expr"))) for name, rule in rules()]
    for path in DASHBOARDS:
        found += [(path.name, e) for e in dashboard_expressions(json.loads(path.read_text()))]
    return found


def metric_names(expression: str) -> set[str]:
    text = GRAFANA_VARIABLE.sub(
        lambda m: (
            "5m" if (m[0].startswith("$__") and "interval" in m[0]) or m[0] == "$__range" else "x"
        ),
        expression,
    )
    parsed = promql_parser.parse(text)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(parsed, visit)
    return names


# The series a metric family of each type exposes (a labelled family that has not
# been observed yet shows only its # TYPE line).
SERIES_SUFFIXES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def exported(running: RunningService) -> set[str]:
    """Series names the service's /metrics (Prometheus text format) declares or shows."""
    answer = httpx.get(f"{running.url}/metrics", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    names = set()
    for line in answer.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            names |= {family + suffix for suffix in SERIES_SUFFIXES.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_the_chart_and_deploy_observability_share_one_copy() -> None:
    link = chart.CHART / "files/observability"
    assert link.is_symlink()
    assert link.resolve() == OBSERVABILITY.resolve()
    assert RULE_FILES and DASHBOARDS


def test_rule_files_and_dashboards_parse() -> None:
    names = [rule.get("alert") or rule.get("record") for _, rule in rules()]
    assert all(names) and len(names) == len(set(names))
    for _, rule in rules():
        assert isinstance(rule["expr"], str)
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"]
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["title"] and dashboard["uid"]


@pytest.mark.parametrize(("source", "expression"), expressions())
def test_every_expression_is_valid_promql(source: str, expression: str) -> None:
    assert metric_names(expression), f"{source}: {expression} selects no metric"


def test_expressions_name_only_exported_metrics(image_services: dict[str, RunningService]) -> None:
    scraped = set().union(*(exported(running) for running in image_services.values()))
    recorded = {rule["record"] for _, rule in rules() if "record" in rule}
    known = scraped | recorded | PROMETHEUS_SERIES
    unknown = {
        f"{source}: {name}"
        for source, expression in expressions()
        for name in metric_names(expression)
        if name not in known
    }
    assert not unknown, f"not exported by the services: {sorted(unknown)}"


def test_the_chart_packages_exactly_these_files() -> None:
    (values,) = [p for p in chart.CI_VALUES if p.stem == "monitoring-values"]
    rendering = chart.render_file(values)
    rule_objects = {r["metadata"]["name"]: r for r in rendering.of_kind("PrometheusRule")}
    assert set(rule_objects) == {f"taskstack-{p.stem}" for p in RULE_FILES}
    for path in RULE_FILES:
        assert rule_objects[f"taskstack-{path.stem}"]["spec"] == yaml.safe_load(path.read_text())
    maps = {
        c["metadata"]["name"]: c
        for c in rendering.of_kind("ConfigMap")
        if "grafana_dashboard" in c["metadata"]["labels"]
    }
    assert set(maps) == {f"taskstack-dashboard-{p.stem}" for p in DASHBOARDS}
    for path in DASHBOARDS:
        configmap = maps[f"taskstack-dashboard-{path.stem}"]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["metadata"]["namespace"] == "monitoring"
        assert json.loads(configmap["data"][path.name]) == json.loads(path.read_text())
    monitors = rendering.of_kind("ServiceMonitor")
    assert {m["spec"]["endpoints"][0]["relabelings"][0]["replacement"] for m in monitors} == {
        "taskstack-auth",
        "taskstack-tasks",
    }


def test_monitoring_is_off_by_default() -> None:
    rendering = chart.render_file(None)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert rendering.of_kind(kind) == []
    assert not [
        c for c in rendering.of_kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]
    ]
