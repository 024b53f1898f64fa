"""GET /v1/tasks: filters, sort orders and keyset pagination, each served by an index.

Every statement starts with ``owner_id = :owner`` and orders by one of the
expressions the migration indexes as ``(owner_id, <expression>, id)``, so
PostgreSQL walks the caller's slice of that index in order and stops after
``limit + 1`` rows; the extra row says whether a next page exists, so no
``COUNT(*)`` is needed (it runs only with ``include_total=true``).
"""

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    DateTime,
    any_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlmodel import Field

from taskstack.common.db import Connection, Statement, fetch_all, fetch_one
from taskstack.common.models import StrictModel
from taskstack.tasks.cursor import CursorCodec, Position
from taskstack.tasks.encoding import EncodedPage, page_json
from taskstack.tasks.errors import InvalidCursor
from taskstack.tasks.models import Priority, task_table
from taskstack.tasks.repository import TASK_COLUMNS
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


class TaskListParams(StrictModel):
    """The query string of GET /v1/tasks; an unknown parameter is a 422, not ignored."""

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
        # Most pages are asked with the same few queries: computed once for each.
        key = tuple(
            tuple(value) if isinstance(value, list) else value
            for name, value in self.__dict__.items()
            if name not in _PAGING_FIELDS
        )
        fingerprint = _FINGERPRINTS.get(key)
        if fingerprint is None:
            fingerprint = self._fingerprint()
            if len(_FINGERPRINTS) < _FINGERPRINTS_KEPT:
                _FINGERPRINTS[key] = fingerprint
        return fingerprint

    def _fingerprint(self) -> str:
        query = self.model_dump(mode="json", exclude=set(_PAGING_FIELDS))
        query["priority"] = sorted(set(query["priority"]))
        query["tag"] = sorted(set(query["tag"]))
        canonical = json.dumps(query, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]


_FINGERPRINTS: dict[tuple[Any, ...], str] = {}
_FINGERPRINTS_KEPT = 1024


@dataclass(frozen=True)
class _Order:
    expression: ColumnElement[Any]
    descending: bool
    row_value: int  # the position, in a row of TASK_COLUMNS, of the value a cursor records
    value_type: type | tuple[type, ...]
    bound: ColumnElement[Any]  # the cursor's sort value, as the expression compares it


def _no_due_at(descending: bool) -> ColumnElement[Any]:
    # Exactly the expressions of the due_at indexes: nulls last in both directions.
    return literal_column("'-infinity'::timestamptz" if descending else "'infinity'::timestamptz")


_AFTER_VALUE = "after_value"
_COLUMN = {column.key: index for index, column in enumerate(TASK_COLUMNS)}


@functools.cache
def _order(sort: SortKey) -> _Order:
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    if key == "due_at":
        expression = func.coalesce(task.due_at, _no_due_at(descending))
        value = bindparam(_AFTER_VALUE, type_=DateTime(timezone=True))
        bound = func.coalesce(value, _no_due_at(descending))
        return _Order(expression, descending, _COLUMN["due_at"], (datetime, type(None)), bound)
    if key == "title":
        value = bindparam(_AFTER_VALUE, type_=task.title.type)
        return _Order(task.title.collate("C"), descending, _COLUMN["title"], str, value)
    if key == "priority":
        value = bindparam(_AFTER_VALUE, type_=task.priority.type)
        return _Order(task.priority, descending, _COLUMN["priority"], int, value)
    column = task.updated_at if key == "updated_at" else task.created_at
    value = bindparam(_AFTER_VALUE, type_=column.type)
    return _Order(column, descending, _COLUMN[key], datetime, value)


@dataclass(frozen=True)
class _Shape:
    """Which filters a query uses (not their values): the statement's structure.

    Statements are built and compiled once per shape, with bound parameters for
    every value: building one per request would cost as much as running it.
    """

    completed: bool | None
    priority: bool
    tag: bool
    due_before: bool
    due_after: bool
    overdue: bool | None
    q: bool

    @classmethod
    def of(cls, params: "TaskListParams") -> "_Shape":
        return cls(
            completed=params.completed,
            priority=bool(params.priority),
            tag=bool(params.tag),
            due_before=params.due_before is not None,
            due_after=params.due_after is not None,
            overdue=params.overdue,
            q=params.q is not None,
        )


def _filters(shape: _Shape) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [task.owner_id == bindparam("owner")]
    if shape.completed is not None:
        conditions.append(task.completed.is_(shape.completed))
    if shape.priority:
        conditions.append(task.priority == any_(bindparam("priorities")))
    if shape.tag:
        conditions.append(task.tags.contains(bindparam("tags", type_=task.tags.type)))
    if shape.due_before:
        conditions.append(task.due_at < bindparam("due_before"))
    if shape.due_after:
        conditions.append(task.due_at >= bindparam("due_after"))
    if shape.overdue is True:
        conditions.append((task.due_at < func.now()) & task.completed.is_(False))
    elif shape.overdue is False:
        conditions.append(or_(task.due_at.is_(None), task.due_at >= func.now(), task.completed))
    if shape.q:
        pattern = bindparam("pattern", type_=task.title.type)
        conditions.append(
            or_(
                task.title.ilike(pattern, escape="\\"), task.description.ilike(pattern, escape="\\")
            )
        )
    return conditions


def _values(owner: uuid.UUID, params: TaskListParams) -> dict[str, Any]:
    """The bound values of the filters ``_filters`` writes for these parameters."""
    values: dict[str, Any] = {"owner": owner, "limit": params.limit + 1}
    if params.priority:
        values["priorities"] = sorted({p.rank for p in params.priority})
    if params.tag:
        values["tags"] = sorted(set(params.tag))
    if params.due_before is not None:
        values["due_before"] = params.due_before
    if params.due_after is not None:
        values["due_after"] = params.due_after
    if params.q is not None:
        values["pattern"] = "%" + _escape_like(params.q) + "%"
    return values


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@functools.lru_cache(maxsize=512)
def _page_shape(sort: SortKey, shape: _Shape, after: bool) -> Statement:
    order = _order(sort)
    conditions = _filters(shape)
    if after:
        mine = tuple_(order.expression, task.id)
        theirs = tuple_(order.bound, bindparam("after_id", type_=task.id.type))
        conditions.append(mine < theirs if order.descending else mine > theirs)
    if order.descending:
        ordering = (order.expression.desc(), task.id.desc())
    else:
        ordering = (order.expression.asc(), task.id.asc())
    statement = select(*TASK_COLUMNS).where(*conditions).order_by(*ordering)
    return Statement.of(statement.limit(bindparam("limit")))


@functools.lru_cache(maxsize=256)
def _count_shape(shape: _Shape) -> Statement:
    return Statement.of(select(func.count()).select_from(task_table).where(*_filters(shape)))


def page_query(
    owner: uuid.UUID, params: TaskListParams, after: Position | None
) -> tuple[Statement, dict[str, Any]]:
    """The statement for one page (``limit + 1`` rows, after ``after`` if given), its values."""
    values = _values(owner, params)
    if after is not None:
        values |= {_AFTER_VALUE: after.sort_value, "after_id": after.task_id}
    return _page_shape(params.sort, _Shape.of(params), after is not None), values


def _position_after(
    params: TaskListParams, codec: CursorCodec, owner: uuid.UUID, fingerprint: str
) -> Position | None:
    if params.cursor is None:
        return None
    position = codec.decode(params.cursor, owner=owner, fingerprint=fingerprint)
    if not isinstance(position.sort_value, _order(params.sort).value_type):
        raise InvalidCursor()
    return position


async def list_tasks(
    connection: Connection, owner: uuid.UUID, params: TaskListParams, codec: CursorCodec
) -> EncodedPage:
    fingerprint = params.fingerprint()
    after = _position_after(params, codec, owner, fingerprint)
    statement, values = page_query(owner, params, after)
    rows = await fetch_all(connection, statement, values)
    next_cursor = None
    if len(rows) > params.limit:
        last = rows[params.limit - 1]
        position = Position(last[_order(params.sort).row_value], last[_COLUMN["id"]])
        next_cursor = codec.encode(position, owner=owner, fingerprint=fingerprint)
    total = None
    if params.include_total:
        row = await fetch_one(connection, _count_shape(_Shape.of(params)), _values(owner, params))
        total = row[0] if row else 0
    return EncodedPage(page_json(rows[: params.limit], next_cursor, total), next_cursor)
