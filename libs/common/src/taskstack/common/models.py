"""SQLModel building blocks shared by every service's tables."""

import uuid
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import DateTime, MetaData, Table, func
from sqlmodel import Field, SQLModel
from sqlmodel._compat import SQLModelConfig  # the type of SQLModel.model_config
from uuid_utils.compat import uuid7

# Explicit constraint names: migrations can refer to them, and they are the
# same on every database the schema is created in.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """The MetaData of one service: its own PostgreSQL schema, the shared naming convention.

    A service's table base sets it as ``metadata`` so its tables (and its
    migrations) stay apart from every other service's.
    """
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel table class, for statements built once."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]  # set by table=True


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so new rows land at the right edge of the primary-key index."""
    return uuid7()


class StrictModel(SQLModel):
    """Base of what clients send (bodies, query strings): a member it does not define is a
    422, not silently ignored, so a misspelt field never goes unnoticed."""

    model_config = SQLModelConfig(extra="forbid")


class UUIDPrimaryKey(SQLModel):
    id: uuid.UUID = Field(default_factory=new_id, primary_key=True)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Timestamps(SQLModel):
    # Set in Python, so the values are known without reading the row back; the
    # server defaults cover rows written by plain SQL.
    created_at: datetime = Field(
        default_factory=utc_now,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": func.now(), "nullable": False},
    )
    updated_at: datetime = Field(
        default_factory=utc_now,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": func.now(), "onupdate": utc_now, "nullable": False},
    )


class Versioned(SQLModel):
    """A version bumped on every change: the basis of ETags and optimistic concurrency."""

    version: int = Field(default=1, sa_column_kwargs={"server_default": "1", "nullable": False})


class Entity(UUIDPrimaryKey, Timestamps, Versioned):
    """A row with a UUIDv7 id, its timestamps and a version: what every entity table has."""
