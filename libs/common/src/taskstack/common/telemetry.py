"""OpenTelemetry tracing, configured only by the standard OTEL_* environment variables.

Tracing is on when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT
or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and OTEL_SDK_DISABLED is not true, or
when the process has already installed an SDK tracer provider of its own.
Spans leave through a batch processor with a bounded queue (OTEL_BSP_*), so a
slow or dead collector never slows a request; the sampler follows
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG. One request is one trace: the
server span (continuing the caller's `traceparent`), its SQL statements and
its outgoing HTTP calls. With tracing off, the caller's `traceparent` is still
made current for the request (taskstack.common.middleware), so log lines carry
its trace id in every environment.
"""

import os
from typing import Any

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from psycopg import AsyncConnection

from taskstack.common.db import Database
from taskstack.common.metrics import INFRASTRUCTURE_PATHS

SUPPORTED_PROTOCOL = "http/protobuf"


class TelemetryConfigurationError(RuntimeError):
    """The OTEL_* environment asks for something taskstack does not do."""


def tracer_provider(service: str, version: str) -> TracerProvider | None:
    """The process's tracer provider, created on first use; None when tracing is off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        return None
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", SUPPORTED_PROTOCOL),
    )
    if protocol != SUPPORTED_PROTOCOL:
        raise TelemetryConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; use {SUPPORTED_PROTOCOL}"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=_resource(service, version))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _resource(service: str, version: str) -> Resource:
    attributes: dict[str, str] = {
        "service.name": f"taskstack-{service}",
        "service.version": version,
    }
    # Set by the chart through the Downward API.
    for variable, attribute in (
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("NODE_NAME", "k8s.node.name"),
    ):
        if value := os.environ.get(variable):
            attributes[attribute] = value
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, take precedence.
    return Resource.create(attributes).merge(OTELResourceDetector().detect())


def instrument_app(app: FastAPI, database: Database, provider: TracerProvider) -> None:
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=",".join(INFRASTRUCTURE_PATHS),
        exclude_spans=["receive", "send"],  # one server span per request, not per ASGI message
    )

    # Each connection of this pool, with this provider (the instrumentor's global
    # patching would bind every connection of the process to the first provider).
    async def trace_statements(connection: AsyncConnection[Any]) -> None:
        PsycopgInstrumentor.instrument_connection(connection, tracer_provider=provider)

    database.on_connect(trace_statements)


def instrument_client(client: httpx.AsyncClient) -> None:
    """Trace (and propagate the context of) a service's outgoing calls."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
