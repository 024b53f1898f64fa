"""Every error kind answers RFC 9457 problem+json, and none leaks internals."""

import logging
from collections.abc import Iterator

import httpx
import pytest

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str) and body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body)


def test_unknown_route_is_404(demo: httpx.Client) -> None:
    assert_problem(demo.get("/v1/demo/nowhere"), 404)


def test_wrong_method_is_405_with_allow(demo: httpx.Client) -> None:
    response = demo.delete("/v1/demo/items/1")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET, HEAD"


def test_validation_error_lists_each_field_without_echoing_input(demo: httpx.Client) -> None:
    response = demo.post("/v1/demo/notes", json={"text": "", "count": "hunter2-not-a-number"})
    body = assert_problem(response, 422)
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {tuple(error["loc"]) for error in errors} == {("body", "text"), ("body", "count")}
    assert all(set(error) == {"loc", "msg", "type"} for error in errors)
    assert "hunter2" not in response.text


def test_query_and_path_validation_is_422(demo: httpx.Client) -> None:
    body = assert_problem(demo.get("/v1/demo/items/abc", params={"limit": 99}), 422)
    assert {tuple(e["loc"]) for e in body["errors"]} == {("path", "number"), ("query", "limit")}  # type: ignore[attr-defined]


def test_malformed_json_is_422(demo: httpx.Client) -> None:
    response = demo.post(
        "/v1/demo/notes", content=b'{"text": ', headers={"content-type": "application/json"}
    )
    body = assert_problem(response, 422)
    assert body["errors"][0]["type"] == "json_invalid"  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/demo/notes", "text/plain"),
        ("/v1/demo/notes", "application/x-www-form-urlencoded"),
        ("/v1/demo/form", "application/json"),
    ],
)
def test_body_in_a_media_type_the_route_does_not_read_is_415(
    demo: httpx.Client, path: str, content_type: str
) -> None:
    response = demo.post(path, content=b'{"text": "x"}', headers={"content-type": content_type})
    assert_problem(response, 415)


def test_accepted_media_types_still_work(demo: httpx.Client) -> None:
    assert demo.post("/v1/demo/form", data={"username": "ada"}).json() == {"username": "ada"}
    response = demo.post(
        "/v1/demo/notes",
        content=b'{"text": "merge"}',
        headers={"content-type": "application/merge-patch+json; charset=utf-8"},
    )
    assert response.status_code == 201


def test_body_over_the_limit_is_413_before_parsing(demo: httpx.Client) -> None:
    big = b'{"text": "' + b"x" * 2_000_000 + b'"}'
    response = demo.post(
        "/v1/demo/notes", content=big, headers={"content-type": "application/json"}
    )
    assert_problem(response, 413)


def test_streamed_body_over_the_limit_is_413(demo: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    response = demo.post(
        "/v1/demo/notes",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)


def test_app_errors_carry_status_and_headers(demo: httpx.Client) -> None:
    body = assert_problem(demo.get("/v1/demo/errors/precondition"), 412)
    assert body["detail"] == "The ETag does not match."
    response = demo.get("/v1/demo/errors/throttled")
    assert_problem(response, 429)
    assert response.headers["retry-after"] == "7"


def test_unexpected_error_is_500_logged_with_request_id_and_nothing_internal(
    demo: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = demo.get("/v1/demo/errors/boom", headers={"x-request-id": "req-500-check"})
    body = assert_problem(response, 500)
    assert body["request_id"] == "req-500-check"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])
    assert getattr(record, "request_id", None) == "req-500-check"
