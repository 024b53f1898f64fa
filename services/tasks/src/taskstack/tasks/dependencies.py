"""Annotated dependency aliases for the task routes.

Every dependency is ``async def``, even those that never await: FastAPI runs a
plain ``def`` dependency in its thread pool, a hand-off per request for nothing.
"""

import uuid
from typing import Annotated

from fastapi import Depends, Header, Path, Request

from taskstack.common.tokens import BearerScheme, authenticate
from taskstack.tasks.etags import EntityTags, parse_entity_tags
from taskstack.tasks.ratelimit import RateLimit
from taskstack.tasks.service import TaskService

# Shared with TaskFront, which passes on to the routes whatever these refuse.
ENTITY_TAGS_MAX_LENGTH = 4096
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


async def _tasks(request: Request) -> TaskService:
    tasks: TaskService = request.app.state.tasks
    return tasks


TaskServiceDep = Annotated[TaskService, Depends(_tasks)]


class _Owner(BearerScheme):
    async def __call__(self, request: Request) -> uuid.UUID:
        # The token's subject is the owner: never the body, never a user lookup.
        owner = (await authenticate(request)).subject
        # Every task route needs the owner, so this is where each request is counted
        # against the owner's rate limit (TaskFront counts the requests it answers).
        rate_limit: RateLimit = request.app.state.rate_limit
        rate_limit.take(owner)
        return owner


OwnerId = Annotated[uuid.UUID, Depends(_Owner())]

TaskId = Annotated[uuid.UUID, Path(description="The task's id (a UUID; anything else is a 422).")]


async def _if_match(
    if_match: Annotated[
        str | None,
        Header(
            max_length=ENTITY_TAGS_MAX_LENGTH,
            description="Only write if the task's ETag is one of these (or `*`); else 412.",
        ),
    ] = None,
) -> EntityTags | None:
    return parse_entity_tags(if_match) if if_match is not None else None


IfMatch = Annotated[EntityTags | None, Depends(_if_match)]


async def _if_none_match(
    if_none_match: Annotated[
        str | None,
        Header(
            max_length=ENTITY_TAGS_MAX_LENGTH,
            description="Answer 304 if the task's ETag is one of these.",
        ),
    ] = None,
) -> EntityTags | None:
    return parse_entity_tags(if_none_match) if if_none_match is not None else None


IfNoneMatch = Annotated[EntityTags | None, Depends(_if_none_match)]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            "1-255 visible ASCII characters, unique per intended creation; "
            "a retry with the same key and body replays the first response."
        ),
    ),
]
