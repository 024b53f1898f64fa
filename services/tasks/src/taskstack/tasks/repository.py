"""The tasks' statements, built once from the Task table.

Every statement is scoped by ``owner_id``, so another user's task is simply
not found. Writes are ``INSERT/UPDATE/DELETE ... RETURNING``: one round trip,
and an If-Match check is part of the UPDATE's WHERE clause, so two writers
holding the same ETag cannot both win. Every statement that answers a task
returns TASK_COLUMNS, a row that ``encoding`` writes as JSON.

The quota: a create and a delete change the owner's row of ``task_count`` in
the same statement, through a data-modifying CTE. A create adds one to the
count only while it is below the quota and inserts the task only from the
row that did: the counter row's lock orders concurrent creates of one owner,
and each sees the count the one before it left, so together they never pass
the quota. Still one statement, so a plain create stays a single write.
"""

import functools
import uuid
from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    ColumnElement,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as upsert

from taskstack.common.db import Connection, Statement, fetch_one
from taskstack.common.models import new_id
from taskstack.tasks.encoding import FIELDS
from taskstack.tasks.errors import StaleTask, TaskNotFound, TaskQuotaExceeded
from taskstack.tasks.models import TaskCreate, task_count_table, task_table

task = task_table.c
counted = task_count_table.c

# The columns every statement returns: TaskPublic's fields, in its order.
TASK_COLUMNS: tuple[ColumnElement[Any], ...] = tuple(task[name] for name in FIELDS)

Row = tuple[Any, ...]


def _completed_at(completed: bool) -> ColumnElement[Any]:
    # Set when a task becomes completed (kept if it already was), cleared when reopened.
    return func.coalesce(task.completed_at, func.now()) if completed else null()


_WRITABLE = tuple(TaskCreate.model_fields)
# One more task for the owner, only while they hold fewer than the quota: no row
# when the quota is full. A new owner's row starts at 1 (the quota is at least 1).
_COUNT_ONE_MORE = (
    upsert(task_count_table)
    .values(owner_id=bindparam("owner_id"), tasks=1)
    .on_conflict_do_update(
        index_elements=[counted.owner_id],
        set_={"tasks": counted.tasks + 1},
        where=counted.tasks < bindparam("quota"),
    )
    .returning(counted.owner_id)
    .cte("counted")
)


def _value(name: str) -> ColumnElement[Any]:
    # In INSERT ... SELECT the values are a SELECT's, typed by nothing but themselves:
    # a NULL due_at would otherwise be text, not a timestamp.
    return cast(bindparam(name), task[name].type)


_INSERTS = {
    completed: Statement.of(
        insert(task_table)
        .from_select(
            ["id", "owner_id", *_WRITABLE, "created_at", "updated_at", "completed_at", "version"],
            select(
                _value("id"),
                _COUNT_ONE_MORE.c.owner_id,
                *(_value(name) for name in _WRITABLE),
                func.now(),
                func.now(),
                func.now() if completed else null(),
                literal(1),
            ),
        )
        .add_cte(_COUNT_ONE_MORE)
        .returning(*TASK_COLUMNS)
    )
    for completed in (False, True)
}
_ONE = Statement.of(
    select(*TASK_COLUMNS).where(task.id == bindparam("id"), task.owner_id == bindparam("owner"))
)
_VERSION = Statement.of(
    select(task.version).where(task.id == bindparam("id"), task.owner_id == bindparam("owner"))
)


def _counting_deletes(deleting: Any) -> Statement:
    """``deleting`` (a DELETE ... RETURNING id) and, in the same statement, the owner's
    count lowered by the rows it deleted; answers how many it deleted."""
    deleted = deleting.cte("deleted")
    how_many = select(func.count()).select_from(deleted).scalar_subquery()
    uncount = (
        update(task_count_table)
        .where(counted.owner_id == bindparam("owner"), how_many > 0)
        # Never below zero: rows written around the API (a bulk load) may be uncounted.
        .values(tasks=func.greatest(counted.tasks - how_many, 0))
        .cte("uncounted")
    )
    return Statement.of(select(func.count()).select_from(deleted).add_cte(uncount))


_DELETE_COMPLETED = _counting_deletes(
    delete(task_table)
    .where(task.owner_id == bindparam("owner"), task.completed.is_(True))
    .returning(task.id)
)


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    """Values of writable fields as the table stores them."""
    if "priority" in values:
        values["priority"] = values["priority"].rank
    return values


async def create(connection: Connection, owner: uuid.UUID, data: TaskCreate, quota: int) -> Row:
    """The new task's row; TaskQuotaExceeded when the owner already holds ``quota`` tasks."""
    values = _stored({"id": new_id(), "owner_id": owner, "quota": quota, **dict(data)})
    row = await fetch_one(connection, _INSERTS[data.completed], values)
    if row is None:
        raise TaskQuotaExceeded(quota)
    return row


async def get(connection: Connection, owner: uuid.UUID, task_id: uuid.UUID) -> Row:
    row = await fetch_one(connection, _ONE, {"id": task_id, "owner": owner})
    if row is None:
        raise TaskNotFound()
    return row


def _matching(statement: Any, if_match: bool) -> Any:
    """The caller's task with this id and, under If-Match, one of the listed versions."""
    statement = statement.where(task.id == bindparam("id"), task.owner_id == bindparam("owner"))
    if if_match:
        statement = statement.where(task.version == any_(bindparam("versions")))
    return statement


@functools.lru_cache(maxsize=256)
def _update(columns: frozenset[str], completed: bool | None, if_match: bool) -> Statement:
    """One UPDATE per shape (which columns change, whether completion does, If-Match)."""
    values: dict[str, Any] = {name: bindparam(name) for name in sorted(columns)}
    if completed is not None:
        values["completed_at"] = _completed_at(completed)
    values |= {"version": task.version + 1, "updated_at": func.now()}
    statement = _matching(update(task_table), if_match).values(values)
    return Statement.of(statement.returning(*TASK_COLUMNS))


@functools.lru_cache(maxsize=2)
def _delete(if_match: bool) -> Statement:
    return _counting_deletes(_matching(delete(task_table), if_match).returning(task.id))


def _scope(
    owner: uuid.UUID, task_id: uuid.UUID, versions: Collection[int] | None
) -> dict[str, Any]:
    scope: dict[str, Any] = {"id": task_id, "owner": owner}
    if versions is not None:
        scope["versions"] = sorted(versions)
    return scope


async def update_fields(
    connection: Connection,
    owner: uuid.UUID,
    task_id: uuid.UUID,
    changes: dict[str, Any],
    versions: Collection[int] | None,
) -> Row:
    """Set the writable fields in ``changes``, only if the version is one of ``versions``
    (None: any version)."""
    completed = changes.get("completed")
    statement = _update(frozenset(changes), completed, versions is not None)
    values = _stored(dict(changes)) | _scope(owner, task_id, versions)
    row = await fetch_one(connection, statement, values)
    if row is None:
        raise await _why_not_written(connection, owner, task_id)
    return row


async def delete_one(
    connection: Connection, owner: uuid.UUID, task_id: uuid.UUID, versions: Collection[int] | None
) -> None:
    row = await fetch_one(
        connection, _delete(versions is not None), _scope(owner, task_id, versions)
    )
    if row is None or row[0] == 0:
        raise await _why_not_written(connection, owner, task_id)


async def delete_completed(connection: Connection, owner: uuid.UUID) -> int:
    row = await fetch_one(connection, _DELETE_COMPLETED, {"owner": owner})
    assert row is not None
    return int(row[0])


async def _why_not_written(
    connection: Connection, owner: uuid.UUID, task_id: uuid.UUID
) -> TaskNotFound | StaleTask:
    """404 when the caller has no such task, else 412: its version did not match If-Match."""
    row = await fetch_one(connection, _VERSION, {"id": task_id, "owner": owner})
    return TaskNotFound() if row is None else StaleTask(row[0])
