"""The raw floor of the task list: no framework, the same SQL and the same JSON.

A bare ASGI callable served by the same uvicorn, pinned the same way: it runs
the statement the tasks service builds for a first page (compiled once from
``taskstack.tasks.listing``) on a psycopg async pool and writes the same page
document, cursor included. What the service spends beyond this is the price
of its framework, validation, token checks and middleware. The caller's id
comes in an ``x-owner`` header: verifying tokens is not part of the floor.

    uvicorn --factory taskstack.bench.floor:create_app   (env: FLOOR_DATABASE_URL)
"""

import json
import os
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from taskstack.tasks.cursor import CursorCodec, Position
from taskstack.tasks.listing import TaskListParams, page_query
from taskstack.tasks.models import Priority

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PROBE_OWNER = uuid.UUID(int=1)
_JSON = [(b"content-type", b"application/json")]


def first_page_sql() -> tuple[str, dict[str, Any], str]:
    """The service's first-page statement as SQL, its parameters, and the owner's parameter."""
    statement, values = page_query(_PROBE_OWNER, TaskListParams(), None)
    params = dict(statement.values(values))
    owner_param = next(name for name, value in params.items() if value == _PROBE_OWNER)
    return statement.sql, params, owner_param


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _item(row: dict[str, Any]) -> dict[str, Any]:
    # TaskPublic's fields, in its order.
    return {
        "title": row["title"],
        "description": row["description"],
        "completed": row["completed"],
        "priority": Priority.from_rank(row["priority"]).value,
        "due_at": _iso(row["due_at"]),
        "tags": row["tags"],
        "id": str(row["id"]),
        "completed_at": _iso(row["completed_at"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "version": row["version"],
    }


class RawFloor:
    def __init__(self, database_url: str, pool_size: int, cursor_secret: bytes):
        self.pool = AsyncConnectionPool[AsyncConnection[Any]](
            database_url, min_size=pool_size, max_size=pool_size, open=False
        )
        self.sql, self.params, self.owner_param = first_page_sql()
        self.limit = TaskListParams().limit
        self.fingerprint = TaskListParams().fingerprint()
        self.codec = CursorCodec(cursor_secret)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["path"] == "/v1/tasks":
            owner = uuid.UUID(dict(scope["headers"])[b"x-owner"].decode())
            await _answer(send, 200, await self._page(owner))
        elif scope["path"] in ("/livez", "/readyz"):
            await _answer(send, 200, b'{"status":"ok"}')
        else:
            await _answer(send, 404, b'{"status":"not found"}')

    async def _page(self, owner: uuid.UUID) -> bytes:
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(self.sql, {**self.params, self.owner_param: owner})
            rows = await cursor.fetchall()
        next_cursor = None
        if len(rows) > self.limit:
            last = rows[self.limit - 1]
            next_cursor = self.codec.encode(
                Position(last["created_at"], last["id"]), owner=owner, fingerprint=self.fingerprint
            )
        page = {
            "items": [_item(row) for row in rows[: self.limit]],
            "next_cursor": next_cursor,
            "total": None,
        }
        return json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.pool.open(wait=True)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": body})


def create_app() -> RawFloor:
    return RawFloor(
        os.environ["FLOOR_DATABASE_URL"],
        int(os.environ.get("DATABASE_POOL_SIZE", "10")),
        os.environ["TASKS_CURSOR_SECRET"].encode(),
    )
