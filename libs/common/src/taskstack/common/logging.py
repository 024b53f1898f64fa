"""JSON logs on stdout: one object per line, UTC timestamps, the request id of the request."""

import logging
import sys
from contextvars import ContextVar
from typing import TextIO

from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

# Set by the request middleware for the duration of one request.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class _RequestContextFilter(logging.Filter):
    """Adds the request id, and the trace and span ids when a span is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None:
            record.request_id = request_id
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stdout is at the time of each record (test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


def configure_logging(service: str, level: str) -> None:
    """Route every logger (uvicorn's included) to one JSON handler on stdout.

    Idempotent: a second call replaces the handler the first one installed and
    leaves any other handler (a test runner's) in place.
    """
    handler = _StdoutHandler()
    handler.setFormatter(
        JsonFormatter(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp=True,
            # uvicorn repeats each message with terminal colour codes as an extra.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )
    )
    handler.addFilter(_RequestContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _StdoutHandler)] + [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The services write their own access line, labelled with the route template.
    logging.getLogger("uvicorn.access").disabled = True
