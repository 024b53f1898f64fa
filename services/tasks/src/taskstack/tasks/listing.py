"""GET /v1/tasks: filters, sort orders and keyset pagination, each served by an index.

Every statement starts with ``owner_id = :owner`` and orders by one of the
expressions the migration indexes as ``(owner_id, <expression>, id)``, so
PostgreSQL walks the caller's slice of that index in order and stops after
``limit + 1`` rows; the extra row says whether a next page exists, so no
``COUNT(*)`` is needed (it runs only with ``include_total=true``).
"""

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Select,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from taskstack.tasks.cursor import CursorCodec, InvalidCursor, Position, SortValue
from taskstack.tasks.models import Priority, TaskPage, task_table
from taskstack.tasks.rows import TASK_COLUMNS, to_public
from taskstack.tasks.validation import MAX_TAGS, AwareDatetime, SearchText, Tag

SortKey = Literal[
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "due_at",
    "-due_at",
    "priority",
    "-priority",
    "title",
    "-title",
]

task = task_table.c  # the columns of tasks.task

_PAGING_FIELDS = frozenset({"limit", "cursor", "include_total"})


class TaskListParams(BaseModel):
    """The query string of GET /v1/tasks; an unknown parameter is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")

    completed: bool | None = Field(default=None, description="Only completed (or open) tasks.")
    priority: list[Priority] = Field(
        default_factory=list, description="Repeatable: tasks with any of these priorities."
    )
    tag: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Repeatable: tasks carrying every one of these tags.",
    )
    due_before: AwareDatetime | None = Field(
        default=None, description="Tasks due strictly before this time."
    )
    due_after: AwareDatetime | None = Field(
        default=None, description="Tasks due at or after this time."
    )
    overdue: bool | None = Field(
        default=None, description="true: open tasks whose due time has passed; false: the rest."
    )
    q: SearchText | None = Field(
        default=None, description="Case-insensitive substring of the title or description."
    )
    sort: SortKey = Field(
        default="-created_at",
        description="Sort key; a leading `-` sorts descending. Ties are broken by id.",
    )
    limit: int = Field(default=20, ge=1, le=100, description="Page size.")
    cursor: str | None = Field(
        # Room for the longest sort value: a 200-character title of 4-byte characters.
        default=None,
        max_length=4096,
        description="`next_cursor` of the previous page.",
    )
    include_total: bool = Field(
        default=False, description="Also count every matching task (costs a COUNT)."
    )

    def fingerprint(self) -> str:
        """Identifies the filters and sort (not the page size), to bind cursors to the query."""
        query = self.model_dump(mode="json", exclude=set(_PAGING_FIELDS))
        query["priority"] = sorted(set(query["priority"]))
        query["tag"] = sorted(set(query["tag"]))
        canonical = json.dumps(query, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Order:
    expression: ColumnElement[Any]
    descending: bool
    row_value: str  # the column whose value a cursor records
    value_type: type | tuple[type, ...]

    def bound(self, value: SortValue) -> ColumnElement[Any]:
        return literal(value)


def _no_due_at(descending: bool) -> ColumnElement[Any]:
    # Exactly the expressions of the due_at indexes: nulls last in both directions.
    return literal_column("'-infinity'::timestamptz" if descending else "'infinity'::timestamptz")


class _DueOrder(_Order):
    def bound(self, value: SortValue) -> ColumnElement[Any]:
        return func.coalesce(literal(value, DateTime(timezone=True)), _no_due_at(self.descending))


def _order(sort: SortKey) -> _Order:
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    if key == "due_at":
        expression = func.coalesce(task.due_at, _no_due_at(descending))
        return _DueOrder(expression, descending, "due_at", (datetime, type(None)))
    if key == "title":
        return _Order(task.title.collate("C"), descending, "title", str)
    if key == "priority":
        return _Order(task.priority, descending, "priority", int)
    column = task.updated_at if key == "updated_at" else task.created_at
    return _Order(column, descending, key, datetime)


def _filters(owner: uuid.UUID, params: TaskListParams) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [task.owner_id == owner]
    if params.completed is not None:
        conditions.append(task.completed.is_(params.completed))
    if params.priority:
        conditions.append(task.priority.in_(sorted({p.rank for p in params.priority})))
    if params.tag:
        conditions.append(task.tags.contains(sorted(set(params.tag))))
    if params.due_before is not None:
        conditions.append(task.due_at < params.due_before)
    if params.due_after is not None:
        conditions.append(task.due_at >= params.due_after)
    if params.overdue is True:
        conditions.append((task.due_at < func.now()) & task.completed.is_(False))
    elif params.overdue is False:
        conditions.append(or_(task.due_at.is_(None), task.due_at >= func.now(), task.completed))
    if params.q is not None:
        pattern = "%" + _escape_like(params.q) + "%"
        conditions.append(
            or_(
                task.title.ilike(pattern, escape="\\"),
                task.description.ilike(pattern, escape="\\"),
            )
        )
    return conditions


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def page_statement(owner: uuid.UUID, params: TaskListParams, after: Position | None) -> Select[Any]:
    """The statement for one page (``limit + 1`` rows), after ``after`` when given."""
    order = _order(params.sort)
    conditions = _filters(owner, params)
    if after is not None:
        mine = tuple_(order.expression, task.id)
        theirs = tuple_(order.bound(after.sort_value), literal(after.task_id))
        conditions.append(mine < theirs if order.descending else mine > theirs)
    if order.descending:
        ordering = (order.expression.desc(), task.id.desc())
    else:
        ordering = (order.expression.asc(), task.id.asc())
    return select(*TASK_COLUMNS).where(*conditions).order_by(*ordering).limit(params.limit + 1)


def count_statement(owner: uuid.UUID, params: TaskListParams) -> Select[Any]:
    return select(func.count()).select_from(task_table).where(*_filters(owner, params))


def _position_after(
    params: TaskListParams, codec: CursorCodec, owner: uuid.UUID
) -> Position | None:
    if params.cursor is None:
        return None
    position = codec.decode(params.cursor, owner=owner, fingerprint=params.fingerprint())
    if not isinstance(position.sort_value, _order(params.sort).value_type):
        raise InvalidCursor()
    return position


async def list_tasks(
    connection: AsyncConnection, owner: uuid.UUID, params: TaskListParams, codec: CursorCodec
) -> TaskPage:
    after = _position_after(params, codec, owner)
    rows: Sequence[Any] = (
        (await connection.execute(page_statement(owner, params, after))).mappings().all()
    )
    items = [to_public(row) for row in rows[: params.limit]]
    next_cursor = None
    if len(rows) > params.limit:
        last = rows[params.limit - 1]
        position = Position(last[_order(params.sort).row_value], last["id"])
        next_cursor = codec.encode(position, owner=owner, fingerprint=params.fingerprint())
    total = None
    if params.include_total:
        total = (await connection.execute(count_statement(owner, params))).scalar_one()
    return TaskPage(items=items, next_cursor=next_cursor, total=total)


def next_link(request: Request, next_cursor: str) -> str:
    """RFC 8288 Link to the next page: this request's query with the new cursor."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    query.append(("cursor", next_cursor))
    return f'<{request.url.path}?{urlencode(query)}>; rel="next"'
