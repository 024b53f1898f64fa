"""Annotated dependency aliases for the task routes."""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from taskstack.common.db import SessionDep
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


def _context(request: Request) -> TasksContext:
    context: TasksContext = request.app.state.tasks
    return context


Context = Annotated[TasksContext, Depends(_context)]


def _owner(token: CurrentToken) -> uuid.UUID:
    # The token's subject is the owner: never the body, never a user lookup.
    return token.subject


OwnerId = Annotated[uuid.UUID, Depends(_owner)]


async def _connection(session: SessionDep) -> AsyncConnection:
    # Core statements on the request session's connection, inside its transaction.
    return await session.connection()


Connection = Annotated[AsyncConnection, Depends(_connection)]

TaskId = Annotated[uuid.UUID, Path(description="The task's id (a UUID; anything else is a 422).")]


def _if_match(
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


def _if_none_match(
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


async def _owned_task(task_id: TaskId, owner: OwnerId, connection: Connection) -> TaskPublic:
    return await service.get_task(connection, owner, task_id)


OwnedTask = Annotated[TaskPublic, Depends(_owned_task)]
