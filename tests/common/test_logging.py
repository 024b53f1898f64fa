"""JSON lines on stdout: one object per line, UTC time, request id; values cannot forge lines."""

import json
import logging

import httpx
import pytest

from taskstack.common.logging import configure_logging, request_id_var


def read_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_each_record_is_one_json_object_with_utc_time_and_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("demo", "INFO")
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("taskstack.test").info("hello\nforged line", extra={"user": "a\x1b[31mb"})
    finally:
        request_id_var.reset(token)
    [record] = [r for r in read_lines(capsys) if r.get("logger") == "taskstack.test"]
    assert record["message"] == "hello\nforged line"
    assert record["user"] == "a\x1b[31mb"
    assert record["level"] == "INFO"
    assert record["service"] == "demo"
    assert record["request_id"] == "req-42"
    assert str(record["timestamp"]).endswith("+00:00")


def test_level_comes_from_settings(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("demo", "WARNING")
    logging.getLogger("taskstack.test").info("hidden")
    logging.getLogger("taskstack.test").warning("shown")
    messages = [r["message"] for r in read_lines(capsys)]
    assert "shown" in messages and "hidden" not in messages
    configure_logging("demo", "INFO")


def test_access_log_line_per_request_with_route_template(
    demo: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = demo.get("/v1/demo/items/7", headers={"x-request-id": "access-1"})
    assert response.status_code == 200
    [line] = [r for r in read_lines(capsys) if r.get("request_id") == "access-1"]
    assert line["message"] == "request"
    assert line["route"] == "/v1/demo/items/{number}"
    assert line["path"] == "/v1/demo/items/7"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
