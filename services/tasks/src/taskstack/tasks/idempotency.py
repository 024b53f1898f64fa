"""Idempotency-Key for POST /v1/tasks: one task per key, however many retries race.

The first request with a key takes a transaction-scoped advisory lock on
(owner, key) and, in the same transaction as the task itself, stores the
response under the key. So:

- a duplicate that arrives while the first is in flight finds the lock taken
  and gets 409 (it never waits, and never creates a second task);
- a retry after the first committed finds the stored response and replays it,
  or gets 422 if its body differs;
- if the first request fails or its process dies, its transaction rolls back
  and the lock goes with it: there is never a key stuck "in flight".

Keys are kept for ``tasks_idempotency_hours`` (at least 24). An expired key
counts as absent and is overwritten when reused; each new key also deletes
up to ``PURGE_BATCH`` expired ones, so the table stays bounded without a job.
"""

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.responses import Response

from taskstack.common.errors import Conflict, UnprocessableContent
from taskstack.tasks.models import idempotency_key_table

PURGE_BATCH = 100
REPLAYED_HEADER = "Idempotent-Replayed"

stored = idempotency_key_table.c


@dataclass(frozen=True)
class IdempotentRequest:
    owner: uuid.UUID
    key: str
    request_hash: str

    @classmethod
    def of(cls, owner: uuid.UUID, key: str, body: BaseModel) -> "IdempotentRequest":
        # The parsed body, canonically serialised: spacing and key order do not
        # make two requests different, a different value does.
        canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return cls(owner, key, hashlib.sha256(canonical.encode()).hexdigest())

    @property
    def lock_id(self) -> int:
        digest = hashlib.sha256(f"taskstack.tasks.idempotency:{self.owner}:{self.key}".encode())
        return int.from_bytes(digest.digest()[:8], "big", signed=True)


async def replay_or_claim(
    connection: AsyncConnection, request: IdempotentRequest
) -> Response | None:
    """The stored response to replay, or None when this request is the one to do the work.

    Raises 409 while another request with the key is in flight, and 422 when
    the key was used with a different body.
    """
    locked = await connection.scalar(select(func.pg_try_advisory_xact_lock(request.lock_id)))
    if not locked:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly."
        )
    row = (
        await connection.execute(
            select(
                stored.request_hash,
                stored.response_status,
                stored.response_body,
                stored.response_headers,
            ).where(
                stored.owner_id == request.owner,
                stored.key == request.key,
                stored.expires_at > func.now(),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    if row.request_hash != request.request_hash:
        raise UnprocessableContent(
            "This Idempotency-Key was already used with a different request body."
        )
    headers: dict[str, Any] = {**row.response_headers, REPLAYED_HEADER: "true"}
    return Response(
        row.response_body,
        status_code=row.response_status,
        headers=headers,
        media_type="application/json",
    )


async def remember(
    connection: AsyncConnection,
    request: IdempotentRequest,
    *,
    status: int,
    body: str,
    headers: dict[str, str],
    keep_for: timedelta,
) -> None:
    """Store the response under the key, in the transaction that produced it."""
    values = {
        "request_hash": request.request_hash,
        "response_status": status,
        "response_body": body,
        "response_headers": headers,
        "created_at": func.now(),
        "expires_at": func.now() + keep_for,
    }
    statement = insert(idempotency_key_table).values(
        owner_id=request.owner, key=request.key, **values
    )
    # A conflicting row can only be an expired one (a live one was replayed).
    await connection.execute(
        statement.on_conflict_do_update(index_elements=["owner_id", "key"], set_=values)
    )
    expired = (
        select(stored.owner_id, stored.key)
        .where(stored.expires_at < func.now())
        .limit(PURGE_BATCH)
        .with_for_update(skip_locked=True)
        .subquery()
    )
    await connection.execute(
        delete(idempotency_key_table).where(
            tuple_(stored.owner_id, stored.key).in_(select(expired.c.owner_id, expired.c.key))
        )
    )
