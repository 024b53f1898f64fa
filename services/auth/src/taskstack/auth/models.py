"""The auth service's tables, all in PostgreSQL schema "auth"."""

from sqlmodel import SQLModel

from taskstack.common.models import schema_metadata

SCHEMA = "auth"


class AuthTable(SQLModel):
    """Base of every table the auth service owns."""

    metadata = schema_metadata(SCHEMA)
