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

from psycopg.types.json import Jsonb
from pydantic import BaseModel
from sqlalchemy import Interval, bindparam, delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert

from taskstack.common.db import Connection, Statement, execute, fetch_one
from taskstack.tasks.errors import IdempotencyKeyInFlight, IdempotencyKeyReused
from taskstack.tasks.models import idempotency_key_table

PURGE_BATCH = 100
REPLAYED_HEADER = "Idempotent-Replayed"

stored = idempotency_key_table.c


@dataclass(frozen=True)
class StoredResponse:
    """What a keyed POST answered: replayed as it was for every retry with the same key."""

    status: int
    body: bytes
    headers: dict[str, str]


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


_LOCK = Statement.of(select(func.pg_try_advisory_xact_lock(bindparam("lock_id"))))
_FIND = Statement.of(
    select(
        stored.request_hash, stored.response_status, stored.response_body, stored.response_headers
    ).where(
        stored.owner_id == bindparam("owner"),
        stored.key == bindparam("key"),
        stored.expires_at > func.now(),
    )
)
_REMEMBERED = {
    "request_hash": bindparam("request_hash"),
    "response_status": bindparam("response_status"),
    "response_body": bindparam("response_body"),
    "response_headers": bindparam("response_headers"),
    "created_at": func.now(),
    "expires_at": func.now() + bindparam("keep_for", type_=Interval()),
}
# A conflicting row can only be an expired one (a live one was replayed).
_REMEMBER = Statement.of(
    insert(idempotency_key_table)
    .values(owner_id=bindparam("owner"), key=bindparam("key"), **_REMEMBERED)
    .on_conflict_do_update(index_elements=["owner_id", "key"], set_=_REMEMBERED)
)
_EXPIRED = (
    select(stored.owner_id, stored.key)
    .where(stored.expires_at < func.now())
    .limit(PURGE_BATCH)
    .with_for_update(skip_locked=True)
    .subquery()
)
_PURGE = Statement.of(
    delete(idempotency_key_table).where(
        tuple_(stored.owner_id, stored.key).in_(select(_EXPIRED.c.owner_id, _EXPIRED.c.key))
    )
)


async def replay_or_claim(
    connection: Connection, request: IdempotentRequest
) -> StoredResponse | None:
    """The stored response to replay, or None when this request is the one to do the work.

    Raises 409 while another request with the key is in flight, and 422 when
    the key was used with a different body.
    """
    locked = await fetch_one(connection, _LOCK, {"lock_id": request.lock_id})
    if not (locked and locked[0]):
        raise IdempotencyKeyInFlight()
    row = await fetch_one(connection, _FIND, {"owner": request.owner, "key": request.key})
    if row is None:
        return None
    request_hash, status, body, headers = row
    if request_hash != request.request_hash:
        raise IdempotencyKeyReused()
    return StoredResponse(status, body.encode(), {**headers, REPLAYED_HEADER: "true"})


async def remember(
    connection: Connection,
    request: IdempotentRequest,
    response: StoredResponse,
    *,
    keep_for: timedelta,
) -> None:
    """Store the response under the key, in the transaction that produced it; and purge a
    few expired keys, so the table stays bounded without a job."""
    values: dict[str, Any] = {
        "owner": request.owner,
        "key": request.key,
        "request_hash": request.request_hash,
        "response_status": response.status,
        "response_body": response.body.decode(),
        "response_headers": Jsonb(response.headers),
        "keep_for": keep_for,
    }
    await execute(connection, _REMEMBER, values)
    await execute(connection, _PURGE, {})
