"""The tasks service's tables (schema "tasks") and the task's public schemas.

The indexes live in the migrations (several are on expressions); the list
queries in ``listing.py`` use exactly those expressions.
"""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from sqlalchemy import Column, DateTime, SmallInteger, Table, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field as ColumnField
from sqlmodel import SQLModel

from taskstack.common.models import Timestamps, UUIDPrimaryKey, Versioned, schema_metadata
from taskstack.tasks.validation import AwareDatetime, Description, Tags, Title

SCHEMA = "tasks"


class TasksTable(SQLModel):
    """Base of every table the tasks service owns."""

    metadata = schema_metadata(SCHEMA)


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """Stored as a small integer, so that sorting by it is sorting by urgency."""
        return _RANKS[self]

    @classmethod
    def from_rank(cls, rank: int) -> "Priority":
        return _BY_RANK[rank]


_RANKS = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2}
_BY_RANK = {rank: priority for priority, rank in _RANKS.items()}


class Task(UUIDPrimaryKey, Timestamps, Versioned, TasksTable, table=True):
    owner_id: uuid.UUID = ColumnField(nullable=False)
    title: str = ColumnField(sa_type=Text, nullable=False)
    description: str | None = ColumnField(default=None, sa_type=Text)
    completed: bool = ColumnField(default=False, nullable=False)
    # Set and cleared by the server: non-null exactly when completed.
    completed_at: datetime | None = ColumnField(default=None, sa_type=DateTime(timezone=True))
    priority: int = ColumnField(default=1, sa_type=SmallInteger, nullable=False)
    due_at: datetime | None = ColumnField(default=None, sa_type=DateTime(timezone=True))
    tags: list[str] = ColumnField(
        default_factory=list,
        sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{}'")),
    )


class IdempotencyKey(TasksTable, table=True):
    """The response of a completed POST made with an Idempotency-Key, replayed on retries."""

    __tablename__: ClassVar[Any] = "idempotency_key"

    owner_id: uuid.UUID = ColumnField(primary_key=True)
    key: str = ColumnField(primary_key=True, sa_type=Text)
    request_hash: str = ColumnField(sa_type=Text, nullable=False)
    response_status: int = ColumnField(sa_type=SmallInteger, nullable=False)
    response_body: str = ColumnField(sa_type=Text, nullable=False)
    response_headers: dict[str, str] = ColumnField(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = ColumnField(
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": text("now()"), "nullable": False},
    )
    expires_at: datetime = ColumnField(sa_type=DateTime(timezone=True), nullable=False)


_NON_NULLABLE = ("title", "completed", "priority", "tags")


class TaskCreate(BaseModel):
    """The writable fields of a task: the body of POST and of PUT (full replacement)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    description: Description | None = None
    completed: StrictBool = False
    priority: Priority = Priority.NORMAL
    due_at: AwareDatetime | None = None
    tags: Tags = Field(default_factory=list)


def _not_nullable(schema: dict[str, Any]) -> None:
    """Document a field that may be absent from a patch but never null."""
    variants = [v for v in schema.pop("anyOf") if v != {"type": "null"}]
    (variant,) = variants
    schema.update(variant)


_PRESENT_NOT_NULL = Field(default=None, json_schema_extra=_not_nullable)


class TaskPatch(BaseModel):
    """A JSON merge patch (RFC 7396): absent fields stay, ``null`` clears an optional one."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = _PRESENT_NOT_NULL
    description: Description | None = None
    completed: StrictBool | None = _PRESENT_NOT_NULL
    priority: Priority | None = _PRESENT_NOT_NULL
    due_at: AwareDatetime | None = None
    tags: Tags | None = _PRESENT_NOT_NULL

    @field_validator(*_NON_NULLABLE, mode="before")
    @classmethod
    def _required_fields_cannot_be_removed(cls, value: object) -> object:
        if value is None:
            raise ValueError("cannot be null: this field is required")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the patch sets, with their new values (None clears)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class TaskPublic(BaseModel):
    id: uuid.UUID
    title: str
    description: str | None
    completed: bool
    completed_at: datetime | None
    priority: Priority
    due_at: datetime | None
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


class TaskPage(BaseModel):
    items: list[TaskPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
    total: int | None = Field(
        default=None, description="Matching tasks in all pages; only with `include_total=true`."
    )


class DeletedCount(BaseModel):
    deleted: int


# Core handles on the tables, for statements that need no ORM round trips.
task_table = cast(Table, getattr(Task, "__table__"))  # noqa: B009 - untyped in SQLModel
idempotency_key_table = cast(Table, getattr(IdempotencyKey, "__table__"))  # noqa: B009
