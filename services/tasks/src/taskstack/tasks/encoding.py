"""Rows of TASK_COLUMNS straight to the JSON bytes every answer carries.

The bytes are exactly what ``TaskPublic.model_dump_json()`` writes (and
``TaskPage``'s for a page): the same key order, datetimes in UTC with ``Z``
and microseconds only when non-zero, the priority by name, the id as a string.
Building a model per row only to serialise it cost more than reading the
row; ``tests/tasks/test_encoding.py`` holds the two to the same bytes.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from taskstack.tasks.models import Priority, TaskPublic

# TASK_COLUMNS are TaskPublic's fields, in its order.
FIELDS: tuple[str, ...] = tuple(TaskPublic.model_fields)
_PRIORITY = FIELDS.index("priority")
_DATETIMES = tuple(
    (index, name)
    for index, name in enumerate(FIELDS)
    if name in ("completed_at", "due_at", "created_at", "updated_at")
)
_CREATED_AT = FIELDS.index("created_at")
_PRIORITY_NAMES = {rank: Priority.from_rank(rank).value for rank in range(len(Priority))}
_OPTIONS = orjson.OPT_UTC_Z


# Zones whose offset is always zero: orjson writes their times with Z as they are.
_UTC_KEYS = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "UCT", "Universal", "Zulu"}
)


def _in_utc(value: datetime) -> bool:
    zone = value.tzinfo
    return zone is UTC or getattr(zone, "key", None) in _UTC_KEYS


def task_document(row: Sequence[Any]) -> dict[str, Any]:
    """A row as the dictionary the JSON encoder writes, keys in TaskPublic's order."""
    document = dict(zip(FIELDS, row, strict=True))
    document["priority"] = _PRIORITY_NAMES[row[_PRIORITY]]
    # psycopg answers in the session's TimeZone, the same for every value of a
    # row; the API always speaks UTC.
    if not _in_utc(row[_CREATED_AT]):
        for index, name in _DATETIMES:
            value: datetime | None = row[index]
            if value is not None:
                document[name] = value.astimezone(UTC)
    return document


def task_json(row: Sequence[Any]) -> bytes:
    """One task, as GET, POST, PUT and PATCH answer it."""
    return orjson.dumps(task_document(row), option=_OPTIONS)


def page_json(rows: Sequence[Sequence[Any]], next_cursor: str | None, total: int | None) -> bytes:
    """A page of tasks, as GET /v1/tasks answers it."""
    page = {
        "items": [task_document(row) for row in rows],
        "next_cursor": next_cursor,
        "total": total,
    }
    return orjson.dumps(page, option=_OPTIONS)


_ID = FIELDS.index("id")
_VERSION = FIELDS.index("version")
_COMPLETED = FIELDS.index("completed")
_COMPLETED_AT = FIELDS.index("completed_at")
_UPDATED_AT = FIELDS.index("updated_at")


@dataclass(frozen=True, slots=True)
class EncodedTask:
    """A task as answered: its JSON, and what the headers and metrics need of it."""

    id: uuid.UUID
    version: int
    # completed_at is set to the transaction's now() only by the write that
    # completes the task, the same now() as updated_at.
    just_completed: bool
    body: bytes

    @classmethod
    def of(cls, row: Sequence[Any]) -> "EncodedTask":
        just_completed = bool(row[_COMPLETED]) and row[_COMPLETED_AT] == row[_UPDATED_AT]
        return cls(row[_ID], row[_VERSION], just_completed, task_json(row))


@dataclass(frozen=True, slots=True)
class EncodedPage:
    """A page as answered: its JSON, and the cursor the Link header points at."""

    body: bytes
    next_cursor: str | None
