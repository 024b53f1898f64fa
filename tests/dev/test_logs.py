"""How `taskstack up` prints its services' log lines: as they are, or one readable line each."""

import io
import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import TextIO

import click
import pytest

from taskstack.dev.logs import LogLines

SERVICES = ("auth", "tasks")
TIMESTAMP = "2026-12-07T19:24:57.442379+00:00"
ACCESS = {
    "level": "INFO",
    "logger": "taskstack.request",
    "message": "request",
    "service": "tasks",
    "method": "GET",
    "route": "/v1/tasks/{task_id}",
    "path": "/v1/tasks/0190f0e6-0000-7000-8000-000000000000",
    "status": 404,
    "duration_ms": 3.21,
    "request_id": "4f1c2d",
    "user_id": "0190f0e6-1111-7000-8000-000000000000",
    "client_ip": "127.0.0.1",
    "timestamp": TIMESTAMP,
}


def local_time(timestamp: str) -> str:
    return datetime.fromisoformat(timestamp).astimezone().strftime("%H:%M:%S.%f")[:-3]


def pretty(colour: bool = False) -> LogLines:
    return LogLines(SERVICES, pretty=True, colour=colour)


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    controller, follower = os.openpty()
    with open(follower, "w") as stream:
        yield stream
    os.close(controller)


def test_json_lines_are_printed_as_they_are_behind_the_service_name() -> None:
    line = json.dumps(ACCESS)
    printed = LogLines(SERVICES, pretty=False, colour=False).format("auth", line)
    assert printed == f"auth  | {line}"


def test_an_access_record_is_one_readable_line_with_the_useful_fields() -> None:
    printed = pretty().format("tasks", json.dumps(ACCESS))
    assert printed == (
        f"{local_time(TIMESTAMP)} tasks INFO    request GET {ACCESS['path']} 404 3.21 ms "
        f"request_id=4f1c2d user_id={ACCESS['user_id']}"
    )
    assert "client_ip" not in printed and "route" not in printed and "\n" not in printed


def test_a_record_shows_its_error_and_then_its_traceback() -> None:
    record = {
        "level": "WARNING",
        "logger": "taskstack.common.tokens",
        "message": "JWKS refresh failed",
        "url": "http://127.0.0.1:8001/.well-known/jwks.json",
        "error": "All connection attempts failed",
        "exc_info": 'Traceback (most recent call last):\n  File "x.py", line 1\nOSError: boom',
        "timestamp": TIMESTAMP,
    }
    first, *traceback = pretty().format("tasks", json.dumps(record)).split("\n")
    assert first == (
        f"{local_time(TIMESTAMP)} tasks WARNING JWKS refresh failed "
        "error=All connection attempts failed"
    )
    assert traceback == str(record["exc_info"]).split("\n")


def test_colour_marks_the_service_and_the_level_only() -> None:
    line = json.dumps({**ACCESS, "level": "ERROR"})
    coloured = pretty(colour=True).format("tasks", line)
    assert coloured != pretty().format("tasks", line)
    assert click.unstyle(coloured) == pretty().format("tasks", line)
    assert click.style("tasks", fg="magenta") in coloured
    assert click.style("ERROR  ", fg="red") in coloured
    assert click.style("auth ", fg="cyan") in pretty(colour=True).format("auth", line)


@pytest.mark.parametrize(
    "line",
    [
        "Traceback (most recent call last):",
        '  File "/app/main.py", line 3, in <module>',
        "INFO:     Started server process [42]",
        "[1, 2, 3]",
        '{"level": "INFO", "message": "no timestamp"}',
        '{"level": "INFO", "message": "a bad one", "timestamp": "yesterday"}',
        '{"truncated": ',
        "",
    ],
)
def test_a_line_that_is_not_a_record_is_printed_unchanged(line: str) -> None:
    assert pretty(colour=True).format("auth", line) == line


def test_auto_is_pretty_at_a_terminal_and_json_otherwise(terminal: TextIO) -> None:
    at_terminal = LogLines.choose("auto", SERVICES, stdout=terminal, environ={})
    assert (at_terminal.pretty, at_terminal.colour) == (True, True)
    piped = LogLines.choose("auto", SERVICES, stdout=io.StringIO(), environ={})
    assert (piped.pretty, piped.colour) == (False, False)
    forced = LogLines.choose("pretty", SERVICES, stdout=io.StringIO(), environ={})
    assert forced.pretty
    assert not LogLines.choose("json", SERVICES, stdout=terminal, environ={}).pretty


@pytest.mark.parametrize(("no_color", "colour"), [("1", False), ("true", False), ("", True)])
def test_no_color_set_and_not_empty_turns_colour_off(
    terminal: TextIO, no_color: str, colour: bool
) -> None:
    chosen = LogLines.choose("auto", SERVICES, stdout=terminal, environ={"NO_COLOR": no_color})
    assert (chosen.pretty, chosen.colour) == (True, colour)
