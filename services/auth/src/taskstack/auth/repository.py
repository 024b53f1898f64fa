"""The accounts' statements, built once from the User table, and how a row becomes a User."""

import uuid
from typing import Any

import psycopg
from sqlalchemy import bindparam, func, insert, select, update

from taskstack.auth.errors import EmailTaken
from taskstack.auth.models import MAX_EMAIL_LENGTH, User, user_table
from taskstack.common.db import Connection, Statement, execute, fetch_one
from taskstack.common.models import new_id
from taskstack.common.text import storable_text

user = user_table.c
_COLUMNS = (user.id, user.email, user.password_hash, user.created_at, user.updated_at, user.version)
_NAMES = tuple(column.key for column in _COLUMNS)

_BY_EMAIL = Statement.of(
    select(*_COLUMNS).where(func.lower(user.email) == func.lower(bindparam("email")))
)
_BY_ID = Statement.of(select(*_COLUMNS).where(user.id == bindparam("id")))
_INSERT = Statement.of(
    insert(user_table)
    .values(
        id=bindparam("id"),
        email=bindparam("email"),
        password_hash=bindparam("password_hash"),
        created_at=func.now(),
        updated_at=func.now(),
        version=1,
    )
    .returning(*_COLUMNS)
)
_SET_PASSWORD = Statement.of(
    update(user_table)
    .where(user.id == bindparam("id"))
    .values(
        password_hash=bindparam("password_hash"),
        version=user.version + 1,
        updated_at=func.now(),
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


async def create(connection: Connection, email: str, password_hash: str) -> User:
    values = {"id": new_id(), "email": email, "password_hash": password_hash}
    try:
        row = await fetch_one(connection, _INSERT, values)
    except psycopg.errors.UniqueViolation:
        raise EmailTaken() from None
    assert row is not None
    return _user(row)


async def set_password(connection: Connection, user_id: uuid.UUID, password_hash: str) -> None:
    await execute(connection, _SET_PASSWORD, {"id": user_id, "password_hash": password_hash})
