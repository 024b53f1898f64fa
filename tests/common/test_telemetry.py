"""Tracing: one request is one trace (server span, then its SQL), context from the caller."""

import json
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import URL

from tests.common.demo import demo_app
from tests.support.servers import serve
from tests.support.tracing import recorded_spans, server_spans

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    exporter = recorded_spans()
    exporter.clear()
    return exporter


@pytest.fixture
def traced(spans: InMemorySpanExporter, clean_demo_database: URL) -> Iterator[httpx.Client]:
    app, _ = demo_app(clean_demo_database)
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        yield client


def test_one_request_is_one_trace_server_span_then_sql(
    traced: httpx.Client, spans: InMemorySpanExporter
) -> None:
    response = traced.post(
        "/v1/demo/notes",
        json={"text": "traced"},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    assert response.status_code == 201
    finished = spans.get_finished_spans()
    [server] = server_spans(finished)
    assert server.name == "POST /v1/demo/notes"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/demo/notes"
    assert (
        server.attributes.get(
            "http.response.status_code", server.attributes.get("http.status_code")
        )
        == 201
    )
    # The caller's context is continued: same trace, the caller's span as parent.
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    sql = [span for span in finished if span.kind is SpanKind.CLIENT]
    assert any("INSERT" in span.name for span in sql), [span.name for span in sql]
    for span in sql:
        assert span.context.trace_id == server.context.trace_id
        assert span.parent is not None and span.parent.span_id == server.context.span_id


def test_health_and_metrics_make_no_spans(
    traced: httpx.Client, spans: InMemorySpanExporter
) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        assert traced.get(path).status_code == 200
    assert spans.get_finished_spans() == ()


def test_logs_carry_the_trace_and_span_ids(
    traced: httpx.Client, spans: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    traced.get("/v1/demo/items/1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    [access] = [line for line in lines if line.get("message") == "request"]
    assert access["trace_id"] == TRACE_ID
    [server] = server_spans(spans.get_finished_spans())
    assert access["span_id"] == format(server.context.span_id, "016x")


def test_openmetrics_exemplars_carry_the_trace_id(traced: httpx.Client) -> None:
    traced.get("/v1/demo/items/1", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    text = traced.get(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    ).text
    assert f'# {{trace_id="{TRACE_ID}"}}' in text


def test_resource_names_the_service_and_pod_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from taskstack.common.telemetry import _resource

    monkeypatch.setenv("POD_NAME", "tasks-5d8-x2")
    attributes = _resource("tasks", "1.2.3").attributes
    assert attributes["service.name"] == "taskstack-tasks"
    assert attributes["service.version"] == "1.2.3"
    assert attributes["k8s.pod.name"] == "tasks-5d8-x2"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "tasks-eu")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,service.version=9")
    overridden = _resource("tasks", "1.2.3").attributes
    assert overridden["service.name"] == "tasks-eu"
    assert overridden["deployment.environment"] == "prod"
    assert overridden["service.version"] == "9"
