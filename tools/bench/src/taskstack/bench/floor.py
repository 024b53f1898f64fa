"""The floor: the tasks service's hot requests at the speed of the driver.

A bare ASGI callable, served by the same uvicorn and pinned the same way as
the services, answering the first page of the list, get, create and patch
with the service's own statements (the same SQL text, taken from
``taskstack.tasks.listing`` and ``taskstack.tasks.repository``) and the
service's bytes. It spends only what those requests cannot do without, on
psycopg 3 tuned:

- a fixed set of ``DATABASE_POOL_SIZE`` connections, opened at start-up and
  handed out through a queue (no pool machinery, no liveness check);
- autocommit: every statement is its own transaction, no BEGIN or COMMIT;
- every statement prepared on its first use on a connection
  (``prepare_threshold=0``);
- tuple rows, encoded by orjson straight to the bytes pydantic writes.

What the service spends beyond this is the price of its framework, token
checks, validation and middleware. The caller's id comes in an ``x-owner``
header, and bodies are read without validation (the benchmark's are valid):
neither is part of the floor. The benchmark checks, before it measures, that
both answer alike (``fidelity.py``).

    uvicorn --factory taskstack.bench.floor:create_app   (env: FLOOR_DATABASE_URL)
"""

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from taskstack.common.models import new_id
from taskstack.common.settings import ServiceSettings
from taskstack.tasks import repository
from taskstack.tasks.cursor import CursorCodec, Position
from taskstack.tasks.etags import etag
from taskstack.tasks.listing import TaskListParams, page_query
from taskstack.tasks.models import API_PREFIX, Priority, TaskCreate

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Header = tuple[bytes, bytes]

_PROBE_OWNER = uuid.UUID(int=1)
_FIELDS = tuple(str(column.key) for column in repository.TASK_COLUMNS)
_PRIORITY = _FIELDS.index("priority")
_ID = _FIELDS.index("id")
_VERSION = _FIELDS.index("version")
_DATETIMES = tuple(i for i, name in enumerate(_FIELDS) if name.endswith("_at"))
_PRIORITY_NAMES = {priority.rank: priority.value for priority in Priority}
_WRITABLE = frozenset(TaskCreate.model_fields)
_CREATE_DEFAULTS: dict[str, Any] = {
    name: field.get_default(call_default_factory=True)
    for name, field in TaskCreate.model_fields.items()
    if not field.is_required()
}
_TASK_PATH = API_PREFIX + "/"
_JSON = (b"content-type", b"application/json")
_PROBLEM = (b"content-type", b"application/problem+json")
# What PostgreSQL says of values the service would have refused before any SQL ran.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)


class BadRequest(Exception):
    """The request is not one the floor answers: a 400."""


def first_page_sql() -> tuple[str, dict[str, Any], str]:
    """The service's first-page statement as SQL, its parameters, and the owner's parameter."""
    statement, values = page_query(_PROBE_OWNER, TaskListParams(), None)
    params = dict(statement.values(values))
    owner_param = next(name for name, value in params.items() if value == _PROBE_OWNER)
    return statement.sql, params, owner_param


def _is_utc(zone: tzinfo) -> bool:
    """UTC all year round (the same offset, zero, in winter and in summer)."""
    year = datetime.now(UTC).year
    return all(zone.utcoffset(datetime(year, month, 1)) == timedelta(0) for month in (1, 7))


class Floor:
    """The ASGI app: the four requests, and /livez and /readyz for the start-up wait."""

    def __init__(self, database_url: str, pool_size: int, cursor_secret: bytes):
        self.database_url = database_url
        self.pool_size = pool_size
        self.idle: asyncio.Queue[AsyncConnection[TupleRow]] = asyncio.Queue()
        self.page_sql, self.page_params, self.owner_param = first_page_sql()
        defaults = TaskListParams()
        self.limit = defaults.limit
        self.fingerprint = defaults.fingerprint()
        self.sort_value = _FIELDS.index(defaults.sort.removeprefix("-"))
        self.codec = CursorCodec(cursor_secret)
        self.get_sql = repository._ONE.sql
        # The service converts timestamps to UTC; the session's zone is kept as the
        # service's is (a cursor records the sort value in it), so rows need converting
        # only when the server's zone is not UTC.
        self.convert = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        try:
            if path == API_PREFIX:
                if method == "GET":
                    await self._page(scope, send)
                elif method == "POST":
                    await self._create(scope, receive, send)
                else:
                    await _problem(send, 405)
            elif path.startswith(_TASK_PATH):
                if method == "GET":
                    await self._get(scope, send)
                elif method == "PATCH":
                    await self._patch(scope, receive, send)
                else:
                    await _problem(send, 405)
            elif path in ("/livez", "/readyz"):
                await _answer(send, 200, b'{"status":"ok"}', [])
            else:
                await _problem(send, 404)
        except (BadRequest, ValueError, TypeError, KeyError, *_REFUSED):
            await _problem(send, 400)

    async def _page(self, scope: Scope, send: Send) -> None:
        if scope["query_string"]:
            raise BadRequest("the floor serves the first page only")
        owner = _owner(scope)
        rows = await self._fetch_all(self.page_sql, {**self.page_params, self.owner_param: owner})
        headers: list[Header] = []
        next_cursor = None
        if len(rows) > self.limit:
            last = rows[self.limit - 1]
            next_cursor = self.codec.encode(
                Position(last[self.sort_value], last[_ID]),
                owner=owner,
                fingerprint=self.fingerprint,
            )
            link = f'<{API_PREFIX}?cursor={next_cursor}>; rel="next"'
            headers.append((b"link", link.encode()))
        page = {
            "items": [self._item(row) for row in rows[: self.limit]],
            "next_cursor": next_cursor,
            "total": None,
        }
        await _answer(send, 200, orjson.dumps(page, option=orjson.OPT_UTC_Z), headers)

    async def _get(self, scope: Scope, send: Send) -> None:
        values = {"id": _task_id(scope), "owner": _owner(scope)}
        await self._one(send, 200, self.get_sql, values)

    async def _create(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _json_body(receive)
        if not body.keys() <= _WRITABLE:
            raise BadRequest("unknown field")
        values = {**_CREATE_DEFAULTS, **body, "id": new_id(), "owner_id": _owner(scope)}
        # The service's statement keeps the owner's task count for the quota: the floor
        # pays for that as well, with no quota it could reach.
        values["quota"] = 2**31 - 1
        values["priority"] = Priority(values["priority"]).rank
        statement = repository._INSERTS[values["completed"] is True]
        await self._one(send, 201, statement.sql, statement.values(values), location=True)

    async def _patch(self, scope: Scope, receive: Receive, send: Send) -> None:
        changes = await _json_body(receive)
        if not changes.keys() <= _WRITABLE:
            raise BadRequest("unknown field")
        statement = repository._update(frozenset(changes), changes.get("completed"), False)
        values = {**changes, "id": _task_id(scope), "owner": _owner(scope)}
        if "priority" in values:
            values["priority"] = Priority(values["priority"]).rank
        await self._one(send, 200, statement.sql, statement.values(values))

    async def _one(
        self,
        send: Send,
        status: int,
        sql: str,
        values: Mapping[str, Any],
        *,
        location: bool = False,
    ) -> None:
        rows = await self._fetch_all(sql, values)
        if not rows:
            await _problem(send, 404)
            return
        row = rows[0]
        headers = [(b"etag", etag(row[_VERSION]).encode())]
        if location:
            headers.append((b"location", f"{_TASK_PATH}{row[_ID]}".encode()))
        await _answer(send, status, orjson.dumps(self._item(row), option=orjson.OPT_UTC_Z), headers)

    def _item(self, row: Sequence[Any]) -> dict[str, Any]:
        item = dict(zip(_FIELDS, row, strict=True))
        item["priority"] = _PRIORITY_NAMES[row[_PRIORITY]]
        if self.convert:
            for index in _DATETIMES:
                if row[index] is not None:
                    item[_FIELDS[index]] = row[index].astimezone(UTC)
        return item

    async def _fetch_all(self, sql: str, values: Mapping[str, Any]) -> list[TupleRow]:
        connection = await self.idle.get()
        try:
            if connection.broken:
                connection = await self._connect()
            cursor = await connection.execute(sql, values)
            return await cursor.fetchall()
        finally:
            self.idle.put_nowait(connection)

    async def _connect(self) -> AsyncConnection[TupleRow]:
        return await AsyncConnection.connect(
            self.database_url, autocommit=True, prepare_threshold=0
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for _ in range(self.pool_size):
                    self.idle.put_nowait(await self._connect())
                first = self.idle.get_nowait()
                self.convert = not _is_utc(first.info.timezone)
                self.idle.put_nowait(first)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                while not self.idle.empty():
                    await self.idle.get_nowait().close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _owner(scope: Scope) -> uuid.UUID:
    for name, value in scope["headers"]:
        if name == b"x-owner":
            return uuid.UUID(value.decode("latin-1"))
    raise BadRequest("no x-owner header")


def _task_id(scope: Scope) -> uuid.UUID:
    return uuid.UUID(scope["path"][len(_TASK_PATH) :])


async def _json_body(receive: Receive) -> dict[str, Any]:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    document = orjson.loads(body)
    if not isinstance(document, dict):
        raise BadRequest("the body is not a JSON object")
    return document


async def _answer(send: Send, status: int, body: bytes, headers: list[Header]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _problem(send: Send, status: int) -> None:
    body = orjson.dumps({"status": status, "title": _TITLES[status]})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_PROBLEM, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


_TITLES = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def create_app() -> Floor:
    default_pool_size = ServiceSettings.model_fields["database_pool_size"].default
    return Floor(
        os.environ["FLOOR_DATABASE_URL"],
        int(os.environ.get("DATABASE_POOL_SIZE", default_pool_size)),
        os.environ["TASKS_CURSOR_SECRET"].encode(),
    )
