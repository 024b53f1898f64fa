"""The task columns every statement returns, and how a row becomes the public schema."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement

from taskstack.tasks.models import Priority, TaskPublic, task_table

TASK_COLUMNS: tuple[ColumnElement[Any], ...] = (
    task_table.c.id,
    task_table.c.title,
    task_table.c.description,
    task_table.c.completed,
    task_table.c.completed_at,
    task_table.c.priority,
    task_table.c.due_at,
    task_table.c.tags,
    task_table.c.created_at,
    task_table.c.updated_at,
    task_table.c.version,
)


def _utc(value: datetime | None) -> datetime | None:
    # psycopg answers in the session's TimeZone; the API always speaks UTC.
    return value.astimezone(UTC) if value is not None else None


def to_public(row: Sequence[Any]) -> TaskPublic:
    # Unpacked by position (TASK_COLUMNS' order): a Row's attribute lookup by
    # name cost more than the model itself, about 0.15 ms on a page of 20.
    # model_construct: the row comes from our own table and needs no re-validation.
    (
        id_,
        title,
        description,
        completed,
        completed_at,
        priority,
        due_at,
        tags,
        created_at,
        updated_at,
        version,
    ) = row
    return TaskPublic.model_construct(
        id=id_,
        title=title,
        description=description,
        completed=completed,
        completed_at=_utc(completed_at),
        priority=Priority.from_rank(priority),
        due_at=_utc(due_at),
        tags=list(tags),
        created_at=created_at.astimezone(UTC),
        updated_at=updated_at.astimezone(UTC),
        version=version,
    )
