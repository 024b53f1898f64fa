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

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from taskstack.auth.models import RefreshToken, RefreshTokenFamily

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


async def rotate(session: AsyncSession, token: str, lifetimes: Lifetimes) -> Rotated | Refusal:
    """Spend ``token`` and issue its successor, or say why not (a reuse revokes the family)."""
    # Row locks on the token and its family: of several concurrent refreshes with
    # one token, exactly one finds it unspent.
    row = (
        await session.exec(
            select(RefreshToken, RefreshTokenFamily)
            .join(RefreshTokenFamily, col(RefreshToken.family_id) == RefreshTokenFamily.id)
            .where(RefreshToken.token_hash == _digest(token))
            .with_for_update()
        )
    ).first()
    if row is None:
        return Refusal.UNKNOWN
    current, family = row
    now = datetime.now(UTC)
    if family.revoked_at is not None:
        return Refusal.REVOKED
    if current.spent_at is not None:
        family.revoked_at = now
        return Refusal.REUSED
    if family.expires_at <= now or current.idle_expires_at <= now:
        return Refusal.EXPIRED
    current.spent_at = now
    return Rotated(
        user_id=family.user_id, refresh_token=_add_token(session, family, now, lifetimes)
    )


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
