"""The accounts' statements, built once from the User table, and how a row becomes a User."""

import uuid
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from taskstack.auth import one_time_tokens
from taskstack.auth.models import MAX_EMAIL_LENGTH, User, one_time_token_table, user_table
from taskstack.common.db import Connection, Statement, execute, fetch_one
from taskstack.common.models import new_id
from taskstack.common.text import storable_text

user = user_table.c
_COLUMNS = (
    user.id,
    user.email,
    user.password_hash,
    user.created_at,
    user.updated_at,
    user.version,
    user.email_verified_at,
    user.disabled_at,
)
_NAMES = tuple(column.key for column in _COLUMNS)

_BY_EMAIL = Statement.of(
    select(*_COLUMNS).where(func.lower(user.email) == func.lower(bindparam("email")))
)
_BY_ID = Statement.of(select(*_COLUMNS).where(user.id == bindparam("id")))
_SET_PASSWORD = Statement.of(
    update(user_table)
    .where(user.id == bindparam("id"))
    .values(
        password_hash=bindparam("password_hash"),
        version=user.version + 1,
        updated_at=func.now(),
    )
)

# A new account, or nothing when the address is taken (whatever its case).
_INSERT_IF_NEW = Statement.of(
    pg_insert(user_table)
    .values(
        id=bindparam("id"),
        email=bindparam("email"),
        password_hash=bindparam("password_hash"),
        created_at=func.now(),
        updated_at=func.now(),
        version=1,
    )
    .on_conflict_do_nothing(index_elements=[text("lower(email)")])
    .returning(*_COLUMNS)
)
_MARK_VERIFIED = Statement.of(
    update(user_table)
    .where(user.id == bindparam("id"), user.email_verified_at.is_(None))
    .values(email_verified_at=func.now(), version=user.version + 1, updated_at=func.now())
)
_token = one_time_token_table.c
_HOLDER = Statement.of(
    select(*_COLUMNS)
    .join(one_time_token_table, _token.user_id == user.id)
    .where(
        _token.token_hash == bindparam("token_hash"),
        _token.purpose == bindparam("purpose"),
        _token.used_at.is_(None),
        _token.expires_at > func.now(),
        user.disabled_at.is_(None),
    )
)


def _user(row: tuple[Any, ...]) -> User:
    return User(**dict(zip(_NAMES, row, strict=True)))


async def find_by_email(connection: Connection, email: str) -> User | None:
    """The account with this address (compared case-insensitively), if any."""
    if len(email) > MAX_EMAIL_LENGTH or not storable_text(email):
        return None  # no account has such an address, and PostgreSQL could not compare it
    row = await fetch_one(connection, _BY_EMAIL, {"email": email})
    return _user(row) if row else None


async def find(connection: Connection, user_id: uuid.UUID) -> User | None:
    row = await fetch_one(connection, _BY_ID, {"id": user_id})
    return _user(row) if row else None


async def set_password(connection: Connection, user_id: uuid.UUID, password_hash: str) -> None:
    await execute(connection, _SET_PASSWORD, {"id": user_id, "password_hash": password_hash})


async def create_if_new(connection: Connection, email: str, password_hash: str) -> User | None:
    """The new account; None when the address has one already."""
    values = {"id": new_id(), "email": email, "password_hash": password_hash}
    row = await fetch_one(connection, _INSERT_IF_NEW, values)
    return _user(row) if row else None


async def mark_verified(connection: Connection, user_id: uuid.UUID) -> None:
    await execute(connection, _MARK_VERIFIED, {"id": user_id})


async def holder_of(
    connection: Connection, token: str, purpose: one_time_tokens.Purpose
) -> User | None:
    """The active account a live, unspent ``token`` of ``purpose`` was issued to."""
    values = {"token_hash": one_time_tokens.digest(token), "purpose": purpose.value}
    row = await fetch_one(connection, _HOLDER, values)
    return _user(row) if row else None
