"""Single-use tokens mailed to an account: random, stored only as their SHA-256 digest,
bound to one account and one purpose, expiring, spent by the one statement that checks them.
"""

import enum
import hashlib
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import Interval, and_, bindparam, delete, func, insert, update

from taskstack.auth.models import one_time_token_table
from taskstack.common.db import Connection, Statement, execute, fetch_one
from taskstack.common.models import new_id

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 128  # a token is 43 characters; anything much longer is not one


class Purpose(enum.StrEnum):
    VERIFY_EMAIL = "verify-email"
    RESET_PASSWORD = "reset-password"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


t = one_time_token_table.c
# A new token supersedes the account's earlier unspent ones of the same purpose.
_SUPERSEDE = Statement.of(
    delete(one_time_token_table).where(
        t.user_id == bindparam("user_id"), t.purpose == bindparam("purpose"), t.used_at.is_(None)
    )
)
_ISSUE = Statement.of(
    insert(one_time_token_table).values(
        id=bindparam("id"),
        user_id=bindparam("user_id"),
        purpose=bindparam("purpose"),
        token_hash=bindparam("token_hash"),
        created_at=func.now(),
        expires_at=func.now() + bindparam("lifetime", type_=Interval),
    )
)
_SPEND = Statement.of(
    update(one_time_token_table)
    .where(
        and_(
            t.token_hash == bindparam("token_hash"),
            t.purpose == bindparam("purpose"),
            t.used_at.is_(None),
            t.expires_at > func.now(),
        )
    )
    .values(used_at=func.now())
    .returning(t.user_id)
)


def new_token() -> tuple[str, bytes]:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, digest(token)


async def store(
    connection: Connection, user_id: uuid.UUID, purpose: Purpose, token: str, lifetime: timedelta
) -> None:
    """Make ``token`` (from new_token) the token of ``user_id`` and ``purpose`` for
    ``lifetime``."""
    token_hash = digest(token)
    await execute(connection, _SUPERSEDE, {"user_id": user_id, "purpose": purpose.value})
    values = {
        "id": new_id(),
        "user_id": user_id,
        "purpose": purpose.value,
        "token_hash": token_hash,
        "lifetime": lifetime,
    }
    await execute(connection, _ISSUE, values)


async def spend(connection: Connection, token: str, purpose: Purpose) -> uuid.UUID | None:
    """The account ``token`` was issued to, spending it; None when it is unknown, of
    another purpose, spent or expired."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    values = {"token_hash": digest(token), "purpose": purpose.value}
    row = await fetch_one(connection, _SPEND, values)
    return row[0] if row else None
