"""The tasks service's tables, all in PostgreSQL schema "tasks"."""

from sqlmodel import SQLModel

from taskstack.common.models import schema_metadata

SCHEMA = "tasks"


class TasksTable(SQLModel):
    """Base of every table the tasks service owns."""

    metadata = schema_metadata(SCHEMA)
