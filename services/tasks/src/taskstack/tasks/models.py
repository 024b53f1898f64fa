"""The tasks service's tables (schema "tasks") and the task's model family.

``TaskBase`` holds the writable fields once; ``Task`` (the table), ``TaskCreate``
(POST and PUT bodies) and ``TaskPublic`` (every answer) derive from it, and
the columns statements return are ``TaskPublic``'s fields. The indexes live
in the migrations (several are on expressions); the list queries in
``listing.py`` use exactly those expressions.
"""

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import StrictBool, field_validator
from sqlalchemy import BigInteger, Column, DateTime, Integer, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from taskstack.common.models import Entity, StrictModel, schema_metadata, table_of
from taskstack.tasks.validation import AwareDatetime, Description, Tags, Title

SCHEMA = "tasks"
API_PREFIX = "/v1/tasks"


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


class TaskBase(SQLModel):
    """The writable fields of a task."""

    title: Title = Field(sa_type=Text, nullable=False)
    description: Description | None = Field(default=None, sa_type=Text)
    completed: StrictBool = Field(default=False, nullable=False)
    # Stored as its rank (Priority.rank).
    priority: Priority = Field(default=Priority.NORMAL, sa_type=SmallInteger, nullable=False)
    due_at: AwareDatetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    tags: Tags = Field(
        default_factory=list,
        sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{}'")),
    )


class Task(Entity, TaskBase, TasksTable, table=True):
    owner_id: uuid.UUID = Field(nullable=False)
    # Set and cleared by the server: non-null exactly when completed.
    completed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class TaskCreate(TaskBase, StrictModel):
    """The body of POST and of PUT (a full replacement: omitted fields take their defaults)."""


class TaskPublic(TaskBase):
    """A task as every answer shows it."""

    id: uuid.UUID
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


def _not_nullable(schema: dict[str, Any]) -> None:
    """Document a field that may be absent from a patch but never null."""
    variants = [v for v in schema.pop("anyOf") if v != {"type": "null"}]
    (variant,) = variants
    schema.update(variant)


_NON_NULLABLE = ("title", "completed", "priority", "tags")
_PRESENT_NOT_NULL: Any = Field(default=None, schema_extra={"json_schema_extra": _not_nullable})


class TaskUpdate(StrictModel):
    """A JSON merge patch (RFC 7396): absent fields stay, ``null`` clears an optional one."""

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


class TaskPage(SQLModel):
    items: list[TaskPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )
    total: int | None = Field(
        default=None, description="Matching tasks in all pages; only with `include_total=true`."
    )


class DeletedCount(SQLModel):
    deleted: int


class IdempotencyKey(TasksTable, table=True):
    """The response of a completed POST made with an Idempotency-Key, replayed on retries."""

    __tablename__: ClassVar[Any] = "idempotency_key"

    owner_id: uuid.UUID = Field(primary_key=True)
    key: str = Field(primary_key=True, sa_type=Text)
    request_hash: str = Field(sa_type=Text, nullable=False)
    response_status: int = Field(sa_type=SmallInteger, nullable=False)
    response_body: str = Field(sa_type=Text, nullable=False)
    response_headers: dict[str, str] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": text("now()"), "nullable": False},
    )
    expires_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False)


class TaskCount(TasksTable, table=True):
    """How many tasks each owner holds, for the quota.

    Changed by the same statement that creates or deletes their tasks, so a
    create checks the quota with one row, never a count of the owner's tasks.
    """

    __tablename__: ClassVar[Any] = "task_count"

    owner_id: uuid.UUID = Field(primary_key=True)
    tasks: int = Field(sa_type=Integer, nullable=False)


class RateLimitWindow(TasksTable, table=True):
    """Requests each owner made in one fixed window, summed over every replica.

    The window leads the key: the purge of past windows walks the primary key.
    """

    __tablename__: ClassVar[Any] = "rate_limit_window"

    window_start: datetime = Field(primary_key=True, sa_type=DateTime(timezone=True))
    owner_id: uuid.UUID = Field(primary_key=True)
    requests: int = Field(sa_type=Integer, nullable=False)


class ClosedAccount(TasksTable, table=True):
    """An account auth has deleted or disabled (or enabled again), as its last applied
    event says: the deny list of access-token subjects, and the mark that makes
    each event apply once (``event_id`` only grows)."""

    __tablename__: ClassVar[Any] = "closed_account"

    user_id: uuid.UUID = Field(primary_key=True)
    event_id: int = Field(sa_type=BigInteger, nullable=False)
    kind: str = Field(max_length=20, nullable=False)
    changed_at: datetime = Field(sa_type=DateTime(timezone=True), nullable=False, index=True)


class AccountEvent(StrictModel):
    """An account event pushed by auth (its outbox's row)."""

    id: int = Field(ge=1)
    user_id: uuid.UUID
    kind: Literal["deleted", "disabled", "enabled"]


task_table = table_of(Task)
idempotency_key_table = table_of(IdempotencyKey)
task_count_table = table_of(TaskCount)
rate_limit_window_table = table_of(RateLimitWindow)
closed_account_table = table_of(ClosedAccount)
