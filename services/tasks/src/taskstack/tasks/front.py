"""TaskFront: the plainest, most frequent requests answered before the framework.

``GET /v1/tasks`` with no query but ``limit`` and ``cursor``, ``GET /v1/tasks/{id}``
with at most one If-None-Match, ``POST /v1/tasks`` and ``PATCH /v1/tasks/{id}``
with a JSON body the route's own model accepts, each carrying a bearer token
the app's own verifier accepts, are most of what clients send. For them,
routing, dependency resolution and query-model validation cost more than
the database work itself, so this hand-written ASGI layer answers them: the
same TaskService call and the same answer builders as the routes
(``page_answer``, ``task_answer``, ``created_answer``, ``written_answer``),
so the bytes, status and headers cannot differ. Anything else (another
parameter, a value or body the route would refuse, another content type, a
missing or refused token, a repeated header) goes on to the documented
FastAPI route, the body it read replayed, so every validation and
authentication error keeps its one implementation. An error the service
raises is answered by ``AppError.response()``, which is what the app's
handler answers too. ``tests/tasks`` runs the route modules against both
entries (TASKS_FRONT on and off).

It sits behind the shared middleware (request id, security headers, metrics,
body limit, replay after a transient database error) and names the route it
answered for in the scope, so the request metrics carry the route template.
"""

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskstack.common.errors import AppError
from taskstack.common.middleware import replay
from taskstack.common.tokens import InvalidToken, TokenVerifier, bearer_token
from taskstack.tasks.dependencies import ENTITY_TAGS_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
from taskstack.tasks.etags import EntityTags, parse_entity_tags
from taskstack.tasks.listing import TaskListParams
from taskstack.tasks.models import API_PREFIX, TaskCreate, TaskUpdate
from taskstack.tasks.ratelimit import RateLimit
from taskstack.tasks.routes import (
    create_task,
    created_answer,
    get_task,
    list_my_tasks,
    page_answer,
    patch_task,
    router,
    task_answer,
    written_answer,
)
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
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN.encode())
# The body types each write reads as JSON; any other spelling (parameters,
# another case, none at all) is the route's to judge.
_CREATE_TYPES = frozenset({b"application/json"})
_PATCH_TYPES = frozenset({b"application/json", b"application/merge-patch+json"})

# Where the front hands a request on: the receive the route reads its body from.
Declined = Receive


class TaskFront:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # What FastAPI puts in the scope when it routes a request to these endpoints.
        self._routes = {
            route.endpoint: route for route in router.routes if isinstance(route, APIRoute)
        }
        self._plain: dict[int | None, TaskListParams] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declined = await self._answer(scope, receive, send)
        if declined is not None:
            await self.app(scope, declined, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> Declined | None:
        """None once the front has answered; else the receive the route reads from."""
        if scope["type"] != "http" or scope.get("root_path"):
            return receive
        method: str = scope["method"]
        if method != "GET" and scope["query_string"]:
            return receive
        path: str = scope["path"]
        if path == API_PREFIX:
            if method == "GET":
                return await self._list(scope, receive, send)
            if method == "POST":
                return await self._create(scope, receive, send)
            return receive
        task_id = path[len(_ITEM_PREFIX) :]
        if not (path.startswith(_ITEM_PREFIX) and _CANONICAL_UUID.fullmatch(task_id)):
            return receive
        if method == "GET":
            return await self._get(scope, receive, send, task_id)
        if method == "PATCH":
            return await self._patch(scope, receive, send, task_id)
        return receive

    async def _list(self, scope: Scope, receive: Receive, send: Send) -> Declined | None:
        query_items = _paging(scope["query_string"])
        if query_items is None:
            return receive
        paging = dict(query_items)
        limit = int(paging["limit"]) if "limit" in paging else None
        params = self._plain_params(limit)
        if params is None:
            return receive
        if "cursor" in paging:
            params = params.model_copy(update={"cursor": paging["cursor"]})
        headers = _headers(scope)
        if headers is None:
            return receive

        async def answer(tasks: TaskService, owner: uuid.UUID) -> Response:
            return page_answer(await tasks.page(owner, params), scope["path"], query_items)

        return await self._serve(scope, receive, send, headers, list_my_tasks, answer)

    async def _get(
        self, scope: Scope, receive: Receive, send: Send, task_id: str
    ) -> Declined | None:
        headers = _headers(scope)
        if headers is None or _refused_tags(headers, b"if-none-match"):
            return receive
        if_none_match = _entity_tags(headers.get(b"if-none-match"))

        async def answer(tasks: TaskService, owner: uuid.UUID) -> Response:
            return task_answer(await tasks.get(owner, uuid.UUID(task_id)), if_none_match)

        return await self._serve(scope, receive, send, headers, get_task, answer)

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> Declined | None:
        headers = _headers(scope)
        if headers is None or headers.get(b"content-type") not in _CREATE_TYPES:
            return receive
        key = headers.get(b"idempotency-key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            return receive
        received = await _body(receive, headers)
        data = _valid(TaskCreate, received)
        if data is None:
            return replay(received.messages, receive)
        idempotency_key = key.decode() if key is not None else None

        async def answer(tasks: TaskService, owner: uuid.UUID) -> Response:
            return created_answer(await tasks.create(owner, data, idempotency_key))

        declined = replay(received.messages, receive)
        return await self._serve(scope, declined, send, headers, create_task, answer)

    async def _patch(
        self, scope: Scope, receive: Receive, send: Send, task_id: str
    ) -> Declined | None:
        headers = _headers(scope)
        if (
            headers is None
            or headers.get(b"content-type") not in _PATCH_TYPES
            or _refused_tags(headers, b"if-match")
        ):
            return receive
        if_match = _entity_tags(headers.get(b"if-match"))
        received = await _body(receive, headers)
        patch = _valid(TaskUpdate, received)
        if patch is None:
            return replay(received.messages, receive)

        async def answer(tasks: TaskService, owner: uuid.UUID) -> Response:
            return written_answer(await tasks.update(owner, uuid.UUID(task_id), patch, if_match))

        declined = replay(received.messages, receive)
        return await self._serve(scope, declined, send, headers, patch_task, answer)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        endpoint: Callable[..., Any],
        answer: Callable[[TaskService, uuid.UUID], Awaitable[Response]],
    ) -> Declined | None:
        """Answer for ``endpoint`` once the token passes: ``answer``'s response, or the
        problem the service raised. For any other token the route decides, reading
        the body from ``receive``."""
        owner = await _owner(scope, headers)
        if owner is None:
            return receive
        self._name_route(scope, endpoint)
        state = scope["app"].state
        try:
            # Counted here, as the routes' owner dependency counts what reaches them.
            rate_limit: RateLimit = state.rate_limit
            rate_limit.take(owner)
            response = await answer(state.tasks, owner)
        except AppError as exc:
            response = exc.response()
        await response(scope, receive, send)
        return None

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


_READ_HEADERS = frozenset(
    {
        b"authorization",
        b"if-none-match",
        b"if-match",
        b"content-type",
        b"content-length",
        b"idempotency-key",
    }
)


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


def _entity_tags(value: bytes | None) -> EntityTags | None:
    return parse_entity_tags(value.decode("latin-1")) if value is not None else None


def _refused_tags(headers: dict[bytes, bytes], name: bytes) -> bool:
    """Whether the route refuses this If-Match or If-None-Match for its length."""
    return len(headers.get(name, b"")) > ENTITY_TAGS_MAX_LENGTH


class _Received:
    """A request body the front read, and the messages it came in, to replay them."""

    __slots__ = ("body", "messages")

    def __init__(self, body: bytes | None, messages: list[Message]) -> None:
        self.body = body
        self.messages = messages


async def _body(receive: Receive, headers: dict[bytes, bytes]) -> _Received:
    """The whole body, when it has a Content-Length (so the shared middleware has
    already refused one too large); None otherwise, or if the client left."""
    messages: list[Message] = []
    if b"content-length" not in headers:
        return _Received(None, messages)
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return _Received(None, messages)
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return _Received(b"".join(chunks), messages)


_Model = TypeVar("_Model", bound=BaseModel)


def _valid(model: type[_Model], received: _Received) -> _Model | None:
    """The body as the route's model, when the model accepts it as it is."""
    if received.body is None:
        return None
    try:
        return model.model_validate_json(received.body)
    except ValidationError:
        return None
