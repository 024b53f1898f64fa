"""What create_service_app gives every service: docs, documented problems, headers, CORS."""

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.common.demo import demo_app
from tests.support.servers import serve


def test_docs_and_schema_live_under_the_public_prefix(demo: httpx.Client) -> None:
    assert demo.get("/v1/demo/docs").status_code == 200
    assert "/v1/demo/openapi.json" in demo.get("/v1/demo/docs").text
    assert demo.get("/v1/demo/openapi.json").status_code == 200
    assert demo.get("/docs").status_code == 404


def test_openapi_documents_every_problem_each_operation_can_return(demo: httpx.Client) -> None:
    schema: dict[str, Any] = demo.get("/v1/demo/openapi.json").json()
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    create = schema["paths"]["/v1/demo/notes"]["post"]["responses"]
    assert {"201", "413", "415", "422", "500", "503"} <= set(create)
    for status in ("413", "415", "422", "500", "503"):
        assert create[status]["content"] == {"application/problem+json": {"schema": problem_ref}}
    assert "Retry-After" in create["503"]["headers"]
    item = schema["paths"]["/v1/demo/items/{number}"]["get"]["responses"]
    assert {"422", "500"} <= set(item) and "415" not in item
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["schemas"]["Problem"]["required"] == ["title", "status"]
    assert "/livez" not in schema["paths"] and "/readyz" not in schema["paths"]


def test_baseline_security_headers_on_every_answer(demo: httpx.Client) -> None:
    for response in (demo.get("/livez"), demo.get("/v1/demo/nowhere")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123.XYZ_9", True), ("bad id\r\nX-Injected: 1", False), ("x" * 200, False)],
)
def test_request_id_is_kept_when_sane_and_replaced_otherwise(
    demo: httpx.Client, sent: str, kept: bool
) -> None:
    response = demo.get("/livez", headers={"x-request-id": sent.replace("\r\n", " ")})
    returned = response.headers["x-request-id"]
    assert (returned == sent) is kept
    if not kept:
        assert len(returned) == 32


def test_no_cors_headers_unless_origins_are_configured(demo: httpx.Client) -> None:
    preflight = demo.options(
        "/v1/demo/notes",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_only_the_configured_origins_and_never_credentials(demo_database: URL) -> None:
    app, _ = demo_app(demo_database, cors_allowed_origins=["https://app.example"])
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        headers = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        }
        allowed = client.options(
            "/v1/demo/notes", headers={"origin": "https://app.example", **headers}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in allowed.headers
        refused = client.options(
            "/v1/demo/notes", headers={"origin": "https://evil.example", **headers}
        )
        assert "access-control-allow-origin" not in refused.headers
        simple = client.get("/livez", headers={"origin": "https://app.example"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"


PER_ANSWER_HEADERS = {"date", "x-request-id"}


def comparable_headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k not in PER_ANSWER_HEADERS]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/demo/items/3?limit=2",
        "/v1/demo/openapi.json",
        "/v1/demo/docs",
        "/livez",
        "/v1/demo/items/abc",  # 422
        "/v1/demo/errors/throttled",  # 429 with Retry-After
        "/v1/demo/nowhere",  # 404
    ],
)
def test_head_answers_as_get_does_without_the_body(demo: httpx.Client, path: str) -> None:
    get, head = demo.get(path), demo.head(path)
    assert head.status_code == get.status_code
    assert comparable_headers(head) == comparable_headers(get)
    assert head.headers["content-length"] == str(len(get.content)) != "0"
    assert head.content == b""


def test_head_where_get_is_not_served_is_405_naming_what_is(demo: httpx.Client) -> None:
    response = demo.head("/v1/demo/notes")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.content == b""


def test_head_is_logged_as_head_under_its_route(
    demo: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="taskstack.request"):
        demo.head("/v1/demo/items/3", headers={"x-request-id": "head-logged"})
    [record] = [r for r in caplog.records if getattr(r, "request_id", None) == "head-logged"]
    assert (record.method, record.route, record.status) == ("HEAD", "/v1/demo/items/{number}", 200)  # type: ignore[attr-defined]
