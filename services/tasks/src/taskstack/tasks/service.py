"""What the task endpoints do, as single statements on the caller's rows.

Every statement is scoped by ``owner_id``, so another user's task is simply
not found. Writes are ``INSERT/UPDATE/DELETE ... RETURNING``: one round trip,
and an If-Match check is part of the UPDATE's WHERE clause, so two writers
holding the same ETag cannot both win. Nothing here commits: the request
session does, after the route returns.
"""

import uuid
from typing import Any, TypeVar

from sqlalchemy import Delete, Insert, Update, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskstack.common.errors import AppError, NotFound, PreconditionFailed
from taskstack.common.models import new_id
from taskstack.tasks.etags import EntityTags, etag
from taskstack.tasks.metrics import TASKS_CREATED, TASKS_DELETED, count_completion
from taskstack.tasks.models import TaskCreate, TaskPatch, TaskPublic, task_table
from taskstack.tasks.rows import TASK_COLUMNS, to_public

task = task_table.c

Statement = TypeVar("Statement", Update, Delete)


class TaskNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No task with this id.")


def _completed_at(completed: bool) -> Any:
    # Set when a task becomes completed (kept if it already was), cleared when reopened.
    return func.coalesce(task.completed_at, func.now()) if completed else None


def _columns_of(data: TaskCreate) -> dict[str, Any]:
    return {
        "title": data.title,
        "description": data.description,
        "completed": data.completed,
        "completed_at": _completed_at(data.completed),
        "priority": data.priority.rank,
        "due_at": data.due_at,
        "tags": data.tags,
    }


def _insert(completed: bool) -> Insert:
    # Column values come with each execution; the timestamps are the server's.
    return (
        insert(task_table)
        .values(
            created_at=func.now(),
            updated_at=func.now(),
            completed_at=func.now() if completed else None,
        )
        .returning(*TASK_COLUMNS)
    )


# Built once (see _ONE_TASK below), one for a task created completed, one for an open one.
_INSERTS = {completed: _insert(completed) for completed in (False, True)}


async def create_task(
    connection: AsyncConnection, owner: uuid.UUID, data: TaskCreate
) -> TaskPublic:
    values = {
        "id": new_id(),
        "owner_id": owner,
        "title": data.title,
        "description": data.description,
        "completed": data.completed,
        "priority": data.priority.rank,
        "due_at": data.due_at,
        "tags": data.tags,
    }
    created = to_public((await connection.execute(_INSERTS[data.completed], values)).one())
    TASKS_CREATED.inc()
    count_completion(created)
    return created


# Built once, values bound per call: building a statement (and its cache key)
# on every request cost about as much as the rest of the database access.
_ONE_TASK = select(*TASK_COLUMNS).where(
    task.id == bindparam("id"), task.owner_id == bindparam("owner")
)
_VERSION = select(task.version).where(
    task.id == bindparam("id"), task.owner_id == bindparam("owner")
)


async def get_task(connection: AsyncConnection, owner: uuid.UUID, task_id: uuid.UUID) -> TaskPublic:
    row = (await connection.execute(_ONE_TASK, {"id": task_id, "owner": owner})).one_or_none()
    if row is None:
        raise TaskNotFound()
    return to_public(row)


async def replace_task(
    connection: AsyncConnection,
    owner: uuid.UUID,
    task_id: uuid.UUID,
    data: TaskCreate,
    if_match: EntityTags | None,
) -> TaskPublic:
    return await _update(connection, owner, task_id, _columns_of(data), if_match)


async def patch_task(
    connection: AsyncConnection,
    owner: uuid.UUID,
    task_id: uuid.UUID,
    patch: TaskPatch,
    if_match: EntityTags | None,
) -> TaskPublic:
    values = patch.changes()
    if "priority" in values:
        values["priority"] = values["priority"].rank
    if "completed" in values:
        values["completed_at"] = _completed_at(values["completed"])
    return await _update(connection, owner, task_id, values, if_match)


async def delete_task(
    connection: AsyncConnection,
    owner: uuid.UUID,
    task_id: uuid.UUID,
    if_match: EntityTags | None,
) -> None:
    statement = _matching(delete(task_table), owner, task_id, if_match).returning(task.id)
    if (await connection.execute(statement)).one_or_none() is None:
        raise await _why_not_written(connection, owner, task_id)
    TASKS_DELETED.inc()


async def delete_completed_tasks(connection: AsyncConnection, owner: uuid.UUID) -> int:
    statement = delete(task_table).where(task.owner_id == owner, task.completed.is_(True))
    deleted = (await connection.execute(statement)).rowcount
    TASKS_DELETED.inc(deleted)
    return deleted


async def _update(
    connection: AsyncConnection,
    owner: uuid.UUID,
    task_id: uuid.UUID,
    values: dict[str, Any],
    if_match: EntityTags | None,
) -> TaskPublic:
    statement = _matching(update(task_table), owner, task_id, if_match)
    statement = statement.values(
        **values, version=task.version + 1, updated_at=func.now()
    ).returning(*TASK_COLUMNS)
    row = (await connection.execute(statement)).one_or_none()
    if row is None:
        raise await _why_not_written(connection, owner, task_id)
    written = to_public(row)
    count_completion(written)
    return written


def _matching(
    statement: Statement, owner: uuid.UUID, task_id: uuid.UUID, if_match: EntityTags | None
) -> Statement:
    """The caller's task with this id and, under If-Match, one of the listed versions."""
    statement = statement.where(task.id == task_id, task.owner_id == owner)
    versions = if_match.versions_for_if_match() if if_match is not None else None
    if versions is not None:
        statement = statement.where(task.version.in_(sorted(versions)))
    return statement


async def _why_not_written(
    connection: AsyncConnection, owner: uuid.UUID, task_id: uuid.UUID
) -> AppError:
    """404 when the caller has no such task, else 412: its version did not match If-Match."""
    version = await connection.scalar(_VERSION, {"id": task_id, "owner": owner})
    if version is None:
        return TaskNotFound()
    return PreconditionFailed(
        "The task has changed since the ETag in If-Match; fetch it again.",
        headers={"ETag": etag(version)},
    )
