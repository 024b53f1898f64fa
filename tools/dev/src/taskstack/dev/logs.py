"""How `taskstack up` shows its services' logs: their JSON lines, or readable lines.

The services always log JSON, one record per line. `taskstack up` prints those
lines as they are, each behind the service's name, or, for a person at a
terminal, one readable line per record: local time, service, level, message
and the few fields worth a glance. A line that is not a record (a traceback
printed before logging was set up, say) is printed unchanged either way.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TextIO, get_args

import click

LogFormat = Literal["auto", "pretty", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)

_LEVEL_COLOURS = {
    "DEBUG": "blue",
    "INFO": "green",
    "WARNING": "yellow",
    "ERROR": "red",
    "CRITICAL": "bright_red",
}
_SERVICE_COLOURS = ("cyan", "magenta", "bright_blue", "bright_green")
_ACCESS_FIELDS = ("method", "path", "status")
_CONTEXT_FIELDS = ("request_id", "user_id", "error")
_LEVEL_WIDTH = len("WARNING")


@dataclass(frozen=True)
class LogLines:
    """Turns each line a service writes into the line `taskstack up` prints."""

    services: Sequence[str]
    pretty: bool
    colour: bool

    @classmethod
    def choose(
        cls,
        log_format: LogFormat,
        services: Sequence[str],
        *,
        stdout: TextIO,
        environ: Mapping[str, str],
    ) -> "LogLines":
        """``auto`` is pretty at a terminal, JSON otherwise; NO_COLOR (https://no-color.org),
        set and not empty, turns colour off."""
        pretty = log_format == "pretty" or (log_format == "auto" and stdout.isatty())
        return cls(services, pretty=pretty, colour=pretty and not environ.get("NO_COLOR"))

    def format(self, service: str, line: str) -> str:
        width = max(len(name) for name in self.services)
        if not self.pretty:
            return f"{service:<{width}} | {line}"
        record = _record(line)
        if record is None:
            return line
        when, fields = record
        level = fields["level"]
        parts = [
            when.astimezone().strftime("%H:%M:%S.%f")[:-3],
            self._style(f"{service:<{width}}", self._service_colour(service)),
            self._style(f"{level:<{_LEVEL_WIDTH}}", _LEVEL_COLOURS.get(level)),
            fields["message"],
        ]
        if all(name in fields for name in _ACCESS_FIELDS):
            parts += [str(fields[name]) for name in _ACCESS_FIELDS]
            if "duration_ms" in fields:
                parts.append(f"{fields['duration_ms']} ms")
        parts += [f"{name}={fields[name]}" for name in _CONTEXT_FIELDS if name in fields]
        readable = " ".join(parts)
        if traceback := fields.get("exc_info"):
            readable += f"\n{traceback}"
        return readable

    def _service_colour(self, service: str) -> str | None:
        if service not in self.services:
            return None
        return _SERVICE_COLOURS[list(self.services).index(service) % len(_SERVICE_COLOURS)]

    def _style(self, text: str, colour: str | None) -> str:
        return click.style(text, fg=colour) if self.colour and colour else text


def _record(line: str) -> tuple[datetime, dict[str, Any]] | None:
    """The time and fields of a log record (with a level and a message); None for any
    other line."""
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    if not isinstance(fields, dict) or not all(
        isinstance(fields.get(name), str) for name in ("timestamp", "level", "message")
    ):
        return None
    try:
        return datetime.fromisoformat(fields["timestamp"]), fields
    except ValueError:
        return None
