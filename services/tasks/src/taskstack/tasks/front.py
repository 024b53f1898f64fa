"""TaskFront: the plainest, most frequent reads answered before the framework.

``GET /v1/tasks`` with no query but ``limit`` and ``cursor``, and ``GET /v1/tasks/{id}``
with at most one If-None-Match, carrying a bearer token the app's own
verifier accepts, are most of what clients send. For them, routing,
dependency resolution and query-model validation cost more than the read
itself, so this hand-written ASGI layer answers them: the same TaskService
call and the same answer builders as the routes (``page_answer``,
``task_answer``), so the bytes, status and headers cannot differ. Anything
else (another parameter, a value the route would refuse, a missing or
refused token, a repeated header) goes on to the documented FastAPI route,
so every validation and authentication error keeps its one implementation.
An error the service raises is answered by ``AppError.response()``, which
is what the app's handler answers too. ``tests/tasks`` runs the list and get
modules against both entries (TASKS_FRONT on and off).

It sits behind the shared middleware (request id, security headers, metrics,
body limit, replay after a transient database error) and names the route it
answered for in the scope, so the request metrics carry the route template.
"""

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from taskstack.common.errors import AppError
from taskstack.common.tokens import InvalidToken, TokenVerifier, bearer_token
from taskstack.tasks.etags import parse_entity_tags
from taskstack.tasks.listing import TaskListParams
from taskstack.tasks.models import API_PREFIX
from taskstack.tasks.routes import get_task, list_my_tasks, page_answer, router, task_answer
from taskstack.tasks.service import TaskService

_ITEM_PREFIX = API_PREFIX + "/"
# Only the canonical spelling: the route's UUID type accepts others, which stay its own.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A page size, and a cursor as CursorCodec writes it (unpadded base64url: no
# percent-escapes to undo); anything else in the query goes to the route.
_PAGING = {
    b"limit": re.compile(rb"[1-9][0-9]{0,2}"),
    b"cursor": re.compile(rb"[A-Za-z0-9_-]{1,4096}"),
}
_MAX_HEADER = 4096  # the If-None-Match length the route accepts


class TaskFront:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # What FastAPI puts in the scope when it routes a request to these endpoints.
        self._routes = {
            route.endpoint: route for route in router.routes if isinstance(route, APIRoute)
        }
        self._plain: dict[int | None, TaskListParams] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._answered(scope, receive, send):
            await self.app(scope, receive, send)

    async def _answered(self, scope: Scope, receive: Receive, send: Send) -> bool:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            return False
        path: str = scope["path"]
        if path == API_PREFIX:
            return await self._list(scope, receive, send)
        task_id = path[len(_ITEM_PREFIX) :]
        if path.startswith(_ITEM_PREFIX) and _CANONICAL_UUID.fullmatch(task_id):
            return await self._get(scope, receive, send, task_id)
        return False

    async def _list(self, scope: Scope, receive: Receive, send: Send) -> bool:
        query_items = _paging(scope["query_string"])
        if query_items is None:
            return False
        paging = dict(query_items)
        limit = int(paging["limit"]) if "limit" in paging else None
        params = self._plain_params(limit)
        if params is None:
            return False
        if "cursor" in paging:
            params = params.model_copy(update={"cursor": paging["cursor"]})
        headers = _headers(scope)
        if headers is None:
            return False

        async def answer(tasks: TaskService, owner: uuid.UUID) -> Response:
            return page_answer(await tasks.page(owner, params), scope["path"], query_items)

        return await self._serve(scope, receive, send, headers, list_my_tasks, answer)

    async def _get(self, scope: Scope, receive: Receive, send: Send, task_id: str) -> bool:
        headers = _headers(scope)
        if headers is None:
            return False
        if_none_match = headers.get(b"if-none-match")
        if if_none_match is not None and len(if_none_match) > _MAX_HEADER:
            return False

        async def answer(tasks: TaskService, owner: uuid.UUID) -> Response:
            task = await tasks.get(owner, uuid.UUID(task_id))
            tags = None
            if if_none_match is not None:
                tags = parse_entity_tags(if_none_match.decode("latin-1"))
            return task_answer(task, tags)

        return await self._serve(scope, receive, send, headers, get_task, answer)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        endpoint: Callable[..., Any],
        answer: Callable[[TaskService, uuid.UUID], Awaitable[Response]],
    ) -> bool:
        """Answer for ``endpoint`` once the token passes: ``answer``'s response, or the
        problem the service raised; False (the route decides) for any other token."""
        owner = await _owner(scope, headers)
        if owner is None:
            return False
        self._name_route(scope, endpoint)
        try:
            response = await answer(scope["app"].state.tasks, owner)
        except AppError as exc:
            response = exc.response()
        await response(scope, receive, send)
        return True

    def _plain_params(self, limit: int | None) -> TaskListParams | None:
        """The query model of a plain first page, validated once per limit; None for a
        limit the route refuses."""
        if limit not in self._plain:
            try:
                self._plain[limit] = (
                    TaskListParams() if limit is None else TaskListParams(limit=limit)
                )
            except ValidationError:
                return None
        return self._plain[limit]

    def _name_route(self, scope: Scope, endpoint: Callable[..., Any]) -> None:
        """Put the route this answer stands for in the scope, as routing would: the
        request metrics read its template there."""
        scope["route"] = self._routes[endpoint]


def _paging(query: bytes) -> list[tuple[str, str]] | None:
    """The query's items when it holds at most a limit and a cursor, each once and
    plainly written, in their order; None for any other query."""
    items: list[tuple[str, str]] = []
    for item in query.split(b"&") if query else ():
        name, _, value = item.partition(b"=")
        pattern = _PAGING.get(name)
        if (
            pattern is None
            or not pattern.fullmatch(value)
            or any(name.decode() == k for k, _ in items)
        ):
            return None
        items.append((name.decode(), value.decode()))
    return items


_READ_HEADERS = frozenset({b"authorization", b"if-none-match"})


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers the front reads; None when one is repeated (the route decides then)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _READ_HEADERS:
            if name in found:
                return None
            found[name] = value
    return found


async def _owner(scope: Scope, headers: dict[bytes, bytes]) -> uuid.UUID | None:
    """The verified token's subject; None for anything the route should refuse itself."""
    token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
    if not token:
        return None
    verifier: TokenVerifier = scope["app"].state.token_verifier
    try:
        access = await verifier.verify(token)
    except InvalidToken:
        return None
    return access.subject
