"""The JWKS fetch (tasks → auth) is traced and carries the trace context to auth."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import URL

from taskstack.tasks.main import create_app
from tests.support.servers import serve
from tests.support.tokens import TokenMint
from tests.support.tracing import recorded_spans
from tests.tasks.conftest import tasks_settings


@pytest.fixture
def auth_double(mint: TokenMint) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A stand-in for auth's JWKS endpoint that records the headers it receives."""
    seen: list[dict[str, str]] = []
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks(request: Request) -> dict[str, Any]:
        seen.append(dict(request.headers))
        return mint.jwks()

    with serve(app) as base_url:
        yield f"{base_url}/.well-known/jwks.json", seen


def test_the_jwks_fetch_propagates_its_trace_context(
    migrated_database: URL, auth_double: tuple[str, list[dict[str, str]]]
) -> None:
    exporter = recorded_spans()
    exporter.clear()
    jwks_url, seen = auth_double
    with serve(create_app(tasks_settings(migrated_database, jwks_url))) as base_url:
        assert httpx.get(f"{base_url}/readyz").status_code == 200
    assert seen, "tasks never fetched the JWKS"
    traceparent = seen[0]["traceparent"]
    _, trace_id, span_id, _ = traceparent.split("-")
    fetches = [
        span
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.CLIENT and format(span.context.span_id, "016x") == span_id
    ]
    assert len(fetches) == 1, "the traceparent names the client span of the fetch"
    assert format(fetches[0].context.trace_id, "032x") == trace_id
    assert fetches[0].attributes is not None
    assert (
        str(fetches[0].attributes.get("url.full", fetches[0].attributes.get("http.url")))
        == jwks_url
    )
