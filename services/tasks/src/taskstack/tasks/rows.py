"""The task columns every statement returns, and how a row becomes the public schema."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Row

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


def to_public(row: Row[Any]) -> TaskPublic:
    # model_construct: the row comes from our own table and needs no re-validation.
    return TaskPublic.model_construct(
        id=row.id,
        title=row.title,
        description=row.description,
        completed=row.completed,
        completed_at=_utc(row.completed_at),
        priority=Priority.from_rank(row.priority),
        due_at=_utc(row.due_at),
        tags=list(row.tags),
        created_at=row.created_at.astimezone(UTC),
        updated_at=row.updated_at.astimezone(UTC),
        version=row.version,
    )
