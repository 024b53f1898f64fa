"""The tasks service's public routes, under /v1/tasks: parse, call the service, answer."""

from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Body, Query, Request, Response

from taskstack.tasks.dependencies import (
    IdempotencyKeyHeader,
    IfMatch,
    IfNoneMatch,
    OwnerId,
    TaskId,
    TaskServiceDep,
)
from taskstack.tasks.encoding import EncodedPage, EncodedTask
from taskstack.tasks.etags import EntityTags, etag
from taskstack.tasks.idempotency import StoredResponse
from taskstack.tasks.listing import TaskListParams
from taskstack.tasks.models import (
    API_PREFIX,
    DeletedCount,
    TaskCreate,
    TaskPage,
    TaskPublic,
    TaskUpdate,
)

_STRING = {"schema": {"type": "string"}}
# Every operation counts against the caller's rate limit (ratelimit.py).
_RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "The caller's requests this minute have reached the rate limit.",
        "headers": {
            "RateLimit-Policy": {**_STRING, "description": 'e.g. `"per-user";q=1200;w=60`'},
            "RateLimit": {**_STRING, "description": 'e.g. `"per-user";r=0;t=17`'},
        },
    }
}

router = APIRouter(prefix=API_PREFIX, tags=["tasks"], responses=_RATE_LIMITED)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such task for this user (another user's task is not found either)."}
}
_STALE: dict[int | str, dict[str, Any]] = {
    412: {"description": "If-Match did not match the task's current ETag; nothing changed."}
}
_ETAG_HEADER = {"ETag": {"schema": {"type": "string"}, "description": "The task's version."}}


def _answer(body: bytes, *, headers: dict[str, str] | None = None) -> Response:
    """JSON bytes the service encoded from its rows.

    Returned as they are: a returned model would be validated against
    response_model again and then encoded; response_model still documents
    the schema.
    """
    return Response(body, headers=headers, media_type=_JSON)


_JSON = "application/json"


@router.post(
    "",
    status_code=201,
    response_model=TaskPublic,
    summary="Create a task",
    responses={
        201: {"headers": {**_ETAG_HEADER, "Location": {"schema": {"type": "string"}}}},
        403: {"description": "The caller holds as many tasks as the task quota allows."},
        409: {"description": "A request with this Idempotency-Key is still in flight."},
        422: {"description": "Invalid body, or an Idempotency-Key reused with another body."},
    },
)
async def create_task(
    data: TaskCreate,
    owner: OwnerId,
    tasks: TaskServiceDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    return created_answer(await tasks.create(owner, data, idempotency_key))


def created_answer(created: StoredResponse) -> Response:
    """A create's 201, or the answer stored under its Idempotency-Key (TaskFront's too)."""
    return Response(
        created.body, status_code=created.status, headers=created.headers, media_type=_JSON
    )


@router.get(
    "",
    response_model=TaskPage,
    summary="List the caller's tasks, a page at a time",
    responses={
        200: {"headers": {"Link": {"schema": {"type": "string"}, "description": "rel=next"}}},
        400: {"description": "The cursor was altered, or belongs to another query or user."},
    },
)
async def list_my_tasks(
    params: Annotated[TaskListParams, Query()],
    request: Request,
    owner: OwnerId,
    tasks: TaskServiceDep,
) -> Response:
    page = await tasks.page(owner, params)
    return page_answer(page, request.url.path, request.query_params.multi_items())


def page_answer(page: EncodedPage, path: str, query: Iterable[tuple[str, str]]) -> Response:
    """A page, and an RFC 8288 Link to the next one: this request's query with the new
    cursor. Also TaskFront's answer, so that both entries answer alike."""
    if page.next_cursor is None:
        return _answer(page.body)
    next_query = [(k, v) for k, v in query if k != "cursor"]
    next_query.append(("cursor", page.next_cursor))
    return _answer(page.body, headers={"Link": f'<{path}?{urlencode(next_query)}>; rel="next"'})


@router.delete(
    "",
    response_model=DeletedCount,
    summary="Delete the caller's completed tasks",
)
async def delete_completed_tasks(
    completed: Annotated[
        bool,
        Query(
            description="Must be true: removes completed tasks.",
            json_schema_extra={"enum": [True]},
        ),
    ],
    owner: OwnerId,
    tasks: TaskServiceDep,
) -> DeletedCount:
    return DeletedCount(deleted=await tasks.delete_completed(owner, completed))


@router.get(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Get a task",
    responses={
        200: {"headers": _ETAG_HEADER},
        304: {"description": "If-None-Match matched: the client's copy is current."},
        **_NOT_FOUND,
    },
)
async def get_task(
    task_id: TaskId, owner: OwnerId, tasks: TaskServiceDep, if_none_match: IfNoneMatch
) -> Response:
    return task_answer(await tasks.get(owner, task_id), if_none_match)


def task_answer(task: EncodedTask, if_none_match: EntityTags | None) -> Response:
    """A task with its ETag, or 304 when the client's copy is current (TaskFront's too)."""
    if if_none_match is not None and if_none_match.matches_weakly(task.version):
        return Response(status_code=304, headers={"ETag": etag(task.version)})
    return _answer(task.body, headers={"ETag": etag(task.version)})


@router.put(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Replace a task",
    responses={200: {"headers": _ETAG_HEADER}, **_NOT_FOUND, **_STALE},
)
async def replace_task(
    task_id: TaskId,
    data: TaskCreate,
    if_match: IfMatch,
    owner: OwnerId,
    tasks: TaskServiceDep,
) -> Response:
    return written_answer(await tasks.replace(owner, task_id, data, if_match))


def written_answer(task: EncodedTask) -> Response:
    """A task as a write left it, with its new ETag (TaskFront's answer to PATCH too)."""
    return _answer(task.body, headers={"ETag": etag(task.version)})


@router.patch(
    "/{task_id}",
    response_model=TaskPublic,
    summary="Change some fields of a task (JSON merge patch, RFC 7396)",
    responses={200: {"headers": _ETAG_HEADER}, **_NOT_FOUND, **_STALE},
    # Plain JSON is read the same way; say so in the schema too.
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskUpdate"}}}
        }
    },
)
async def patch_task(
    task_id: TaskId,
    patch: Annotated[TaskUpdate, Body(media_type="application/merge-patch+json")],
    if_match: IfMatch,
    owner: OwnerId,
    tasks: TaskServiceDep,
) -> Response:
    return written_answer(await tasks.update(owner, task_id, patch, if_match))


@router.delete(
    "/{task_id}",
    status_code=204,
    summary="Delete a task",
    responses={**_NOT_FOUND, **_STALE},
)
async def delete_task(
    task_id: TaskId, if_match: IfMatch, owner: OwnerId, tasks: TaskServiceDep
) -> Response:
    await tasks.delete(owner, task_id, if_match)
    return Response(status_code=204)
