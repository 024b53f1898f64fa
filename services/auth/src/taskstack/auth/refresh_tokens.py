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
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from taskstack.auth.models import RefreshToken, RefreshTokenFamily
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


@dataclass(frozen=True)
class Lifetimes:
    absolute: timedelta
    idle: timedelta


async def start_family(session: AsyncSession, user_id: uuid.UUID, lifetimes: Lifetimes) -> str:
    now = datetime.now(UTC)
    family = RefreshTokenFamily(
        user_id=user_id, created_at=now, expires_at=now + lifetimes.absolute
    )
    session.add(family)
    await session.flush()  # the token row refers to it (no ORM relationship orders them)
    return _add_token(session, family, now, lifetimes)


def _add_token(
    session: AsyncSession, family: RefreshTokenFamily, now: datetime, lifetimes: Lifetimes
) -> str:
    token = secrets.token_urlsafe(TOKEN_BYTES)
    session.add(
        RefreshToken(
            family_id=family.id,
            token_hash=_digest(token),
            created_at=now,
            idle_expires_at=min(now + lifetimes.idle, family.expires_at),
        )
    )
    return token


# One statement, so one round trip in autocommit: a refresh spends its token,
# adds the successor, or revokes the family on reuse, atomically. As separate
# ORM statements inside BEGIN/COMMIT it took six round trips to PostgreSQL, and
# each one waits for the event loop's next turn: under load, most of a
# refresh's latency. The row locks (FOR UPDATE) serialise refreshes of one
# token: of several at once, exactly one finds it unspent; the others, after
# the winner commits, see it spent, and revoke the family.
_ROTATE = text(
    """
    WITH presented AS (
        SELECT t.id, t.family_id, t.spent_at, t.idle_expires_at,
               f.user_id, f.revoked_at, f.expires_at
        FROM auth.refresh_token AS t
        JOIN auth.refresh_token_family AS f ON f.id = t.family_id
        WHERE t.token_hash = :token_hash
        FOR UPDATE
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
    SELECT outcome, user_id FROM verdict
    """
)


async def rotate(
    connection: AsyncConnection, token: str, lifetimes: Lifetimes
) -> Rotated | Refusal:
    """Spend ``token`` and issue its successor, or say why not (a reuse revokes the family)."""
    successor = secrets.token_urlsafe(TOKEN_BYTES)
    row = (
        await connection.execute(
            _ROTATE,
            {
                "token_hash": _digest(token),
                "successor_id": new_id(),
                "successor_hash": _digest(successor),
                "idle_seconds": lifetimes.idle.total_seconds(),
            },
        )
    ).first()
    if row is None:
        return Refusal.UNKNOWN
    if row.outcome != "rotated":
        return Refusal(row.outcome)
    return Rotated(user_id=row.user_id, refresh_token=successor)


async def revoke(session: AsyncSession, token: str) -> bool:
    """End the session ``token`` belongs to; False when it is not a known refresh token."""
    family_id = select(RefreshToken.family_id).where(RefreshToken.token_hash == _digest(token))
    result = await session.exec(
        update(RefreshTokenFamily)
        .where(col(RefreshTokenFamily.id).in_(family_id.scalar_subquery()))
        .where(col(RefreshTokenFamily.revoked_at).is_(None))
        .values(revoked_at=func.now())
    )
    return bool(result.rowcount)


async def revoke_all(session: AsyncSession, user_id: uuid.UUID) -> None:
    """End every session of a user (after a password change)."""
    await session.exec(
        update(RefreshTokenFamily)
        .where(col(RefreshTokenFamily.user_id) == user_id)
        .where(col(RefreshTokenFamily.revoked_at).is_(None))
        .values(revoked_at=func.now())
    )
