"""Refresh tokens (RFC 9700 §4.14.2): opaque, stored hashed, rotated on every use, in families.

A password grant starts a family. Each refresh spends the presented token and
issues the next one in the same family; presenting a spent token again means
it was stolen (or replayed), so the whole family is revoked. A family ends at
its absolute lifetime; a token also ends when unused for the idle lifetime.
"""

import enum
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, func, select, text, update

from taskstack.auth.models import refresh_token_family_table, refresh_token_table
from taskstack.common.db import Connection, Statement, execute, fetch_one
from taskstack.common.models import new_id

TOKEN_BYTES = 32  # 256 bits from the CSPRNG


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Refusal(enum.Enum):
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"


@dataclass(frozen=True)
class Rotated:
    user_id: uuid.UUID
    refresh_token: str
    email_verified: bool


@dataclass(frozen=True)
class Lifetimes:
    absolute: timedelta
    idle: timedelta


family = refresh_token_family_table.c
token = refresh_token_table.c

# A new family and its first token, in one statement.
_START = Statement.of(
    text(
        """
        WITH family AS (
            INSERT INTO auth.refresh_token_family (id, user_id, created_at, expires_at)
            VALUES (:family_id, :user_id, now(), now() + make_interval(secs => :absolute_seconds))
            RETURNING id, expires_at
        )
        INSERT INTO auth.refresh_token (id, family_id, token_hash, created_at, idle_expires_at)
        SELECT :token_id, id, :token_hash, now(),
               least(now() + make_interval(secs => :idle_seconds), expires_at)
        FROM family
        """
    )
)


async def start_family(connection: Connection, user_id: uuid.UUID, lifetimes: Lifetimes) -> str:
    """Start a session (a password grant): a new family and its first refresh token."""
    refresh_token = secrets.token_urlsafe(TOKEN_BYTES)
    values = {
        "family_id": new_id(),
        "user_id": user_id,
        "token_id": new_id(),
        "token_hash": _digest(refresh_token),
        "absolute_seconds": lifetimes.absolute.total_seconds(),
        "idle_seconds": lifetimes.idle.total_seconds(),
    }
    await execute(connection, _START, values)
    return refresh_token


# One statement, so one round trip in autocommit: a refresh spends its token,
# adds the successor, or revokes the family on reuse, atomically; each round
# trip waits for the event loop's next turn, which under load is most of a
# refresh's latency. The row locks (FOR UPDATE) serialise refreshes of one
# token: of several at once, exactly one finds it unspent; the others, after
# the winner commits, see it spent, and revoke the family.
_ROTATE = Statement.of(
    text(
        """
    WITH presented AS (
        SELECT t.id, t.family_id, t.spent_at, t.idle_expires_at,
               f.user_id, f.revoked_at, f.expires_at,
               u.email_verified_at IS NOT NULL AS email_verified
        FROM auth.refresh_token AS t
        JOIN auth.refresh_token_family AS f ON f.id = t.family_id
        JOIN auth.user AS u ON u.id = f.user_id
        WHERE t.token_hash = :token_hash
        FOR UPDATE OF t, f
    ), verdict AS (
        SELECT *, CASE
            WHEN revoked_at IS NOT NULL THEN 'revoked'
            WHEN spent_at IS NOT NULL THEN 'reused'
            WHEN expires_at <= now() OR idle_expires_at <= now() THEN 'expired'
            ELSE 'rotated'
        END AS outcome
        FROM presented
    ), spend AS (
        UPDATE auth.refresh_token SET spent_at = now()
        WHERE id IN (SELECT id FROM verdict WHERE outcome = 'rotated')
    ), successor AS (
        INSERT INTO auth.refresh_token (id, family_id, token_hash, created_at, idle_expires_at)
        SELECT :successor_id, family_id, :successor_hash, now(),
               least(now() + make_interval(secs => :idle_seconds), expires_at)
        FROM verdict WHERE outcome = 'rotated'
    ), revoke_family AS (
        UPDATE auth.refresh_token_family SET revoked_at = now()
        WHERE id IN (SELECT family_id FROM verdict WHERE outcome = 'reused')
    )
    SELECT outcome, user_id, email_verified FROM verdict
    """
    )
)


async def rotate(connection: Connection, token: str, lifetimes: Lifetimes) -> Rotated | Refusal:
    """Spend ``token`` and issue its successor, or say why not (a reuse revokes the family)."""
    successor = secrets.token_urlsafe(TOKEN_BYTES)
    values = {
        "token_hash": _digest(token),
        "successor_id": new_id(),
        "successor_hash": _digest(successor),
        "idle_seconds": lifetimes.idle.total_seconds(),
    }
    row = await fetch_one(connection, _ROTATE, values)
    if row is None:
        return Refusal.UNKNOWN
    outcome, user_id, email_verified = row
    if outcome != "rotated":
        return Refusal(outcome)
    return Rotated(user_id=user_id, refresh_token=successor, email_verified=email_verified)


_REVOKE = Statement.of(
    update(refresh_token_family_table)
    .where(
        family.id.in_(
            select(token.family_id)
            .where(token.token_hash == bindparam("token_hash"))
            .scalar_subquery()
        ),
        family.revoked_at.is_(None),
    )
    .values(revoked_at=func.now())
)
_REVOKE_ALL = Statement.of(
    update(refresh_token_family_table)
    .where(family.user_id == bindparam("user_id"), family.revoked_at.is_(None))
    .values(revoked_at=func.now())
)


async def revoke(connection: Connection, token: str) -> bool:
    """End the session ``token`` belongs to; False when it is not a known refresh token."""
    return bool(await execute(connection, _REVOKE, {"token_hash": _digest(token)}))


async def revoke_all(connection: Connection, user_id: uuid.UUID) -> None:
    """End every session of a user (after a password change)."""
    await execute(connection, _REVOKE_ALL, {"user_id": user_id})
