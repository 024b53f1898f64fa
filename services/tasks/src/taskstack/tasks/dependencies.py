"""Annotated dependency aliases for the task routes.

Every dependency is ``async def``, even those that never await: FastAPI runs a
plain ``def`` dependency in its thread pool, and those hand-offs took about an
eighth of a list request's time.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from taskstack.common.db import Database
from taskstack.common.tokens import CurrentToken
from taskstack.tasks import service
from taskstack.tasks.cursor import CursorCodec
from taskstack.tasks.etags import EntityTags, parse_entity_tags
from taskstack.tasks.models import TaskPublic


@dataclass(frozen=True)
class TasksContext:
    """Per-app objects the routes need, built from settings by create_app()."""

    cursor_codec: CursorCodec
    idempotency_retention: timedelta


async def _context(request: Request) -> TasksContext:
    context: TasksContext = request.app.state.tasks
    return context


Context = Annotated[TasksContext, Depends(_context)]


async def _owner(token: CurrentToken) -> uuid.UUID:
    # The token's subject is the owner: never the body, never a user lookup.
    return token.subject


OwnerId = Annotated[uuid.UUID, Depends(_owner)]


async def _connection(request: Request) -> AsyncIterator[AsyncConnection]:
    # Core statements in one transaction, committed before the response is sent.
    database: Database = request.app.state.database
    async with database.connection() as connection:
        yield connection


async def _read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    # A read is one statement (two with include_total), so no BEGIN and COMMIT.
    database: Database = request.app.state.database
    async with database.connection(autocommit=True) as connection:
        yield connection


# scope="function": the commit happens before the response is sent, so a
# failed commit can never follow a success status.
Connection = Annotated[AsyncConnection, Depends(_connection, scope="function")]
ReadConnection = Annotated[AsyncConnection, Depends(_read_connection, scope="function")]

TaskId = Annotated[uuid.UUID, Path(description="The task's id (a UUID; anything else is a 422).")]


async def _if_match(
    if_match: Annotated[
        str | None,
        Header(
            max_length=4096,
            description="Only write if the task's ETag is one of these (or `*`); else 412.",
        ),
    ] = None,
) -> EntityTags | None:
    return parse_entity_tags(if_match) if if_match is not None else None


IfMatch = Annotated[EntityTags | None, Depends(_if_match)]


async def _if_none_match(
    if_none_match: Annotated[
        str | None,
        Header(max_length=4096, description="Answer 304 if the task's ETag is one of these."),
    ] = None,
) -> EntityTags | None:
    return parse_entity_tags(if_none_match) if if_none_match is not None else None


IfNoneMatch = Annotated[EntityTags | None, Depends(_if_none_match)]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,255}$",
        description=(
            "1-255 visible ASCII characters, unique per intended creation; "
            "a retry with the same key and body replays the first response."
        ),
    ),
]


async def _owned_task(task_id: TaskId, owner: OwnerId, connection: ReadConnection) -> TaskPublic:
    return await service.get_task(connection, owner, task_id)


OwnedTask = Annotated[TaskPublic, Depends(_owned_task)]
