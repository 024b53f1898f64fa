"""A small service built with create_service_app, to test the shared library in use."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import bindparam, insert, literal_column
from sqlalchemy.engine import URL
from sqlmodel import SQLModel

from taskstack.common.app import create_service_app
from taskstack.common.db import Database, Statement, execute, fetch_one
from taskstack.common.errors import Conflict, PreconditionFailed, TooManyRequests
from taskstack.common.health import ReadinessCheck
from taskstack.common.models import (
    Timestamps,
    UUIDPrimaryKey,
    Versioned,
    new_id,
    schema_metadata,
    table_of,
)
from taskstack.common.settings import ServiceSettings

SCHEMA = "demo"


class DemoTable(SQLModel):
    metadata = schema_metadata(SCHEMA)


class Note(UUIDPrimaryKey, Timestamps, Versioned, DemoTable, table=True):
    text: str


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=100)
    count: int = 1


# A note with this text makes its COMMIT lose the connection: a deferred
# constraint trigger (created with the demo schema) terminates the backend
# while the COMMIT runs, so the client cannot know whether it landed.
LOSE_CONNECTION_AT_COMMIT = "lose-connection-at-commit"

COMMIT_FAULT_DDL = (
    f"""
    CREATE FUNCTION {SCHEMA}.terminate_own_backend() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_terminate_backend(pg_backend_pid());
        RETURN NULL;
    END $$
    """,
    f"""
    CREATE CONSTRAINT TRIGGER lose_connection_at_commit AFTER INSERT ON {SCHEMA}.note
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.text = '{LOSE_CONNECTION_AT_COMMIT}')
    EXECUTE FUNCTION {SCHEMA}.terminate_own_backend()
    """,
)

_INSERT = Statement.of(
    insert(table_of(Note))
    .values(
        id=bindparam("id"),
        text=bindparam("text"),
        version=1,
        created_at=literal_column("now()"),
        updated_at=literal_column("now()"),
    )
    .returning(table_of(Note).c.id, table_of(Note).c.version)
)

FAULT_SQL = {
    "serialization": "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
    "disconnect": "SELECT pg_terminate_backend(pg_backend_pid())",
}


@dataclass
class Faults:
    """How many of the next POST /notes fail after inserting, and how; attempts seen."""

    remaining: int = 0
    kind: str = "serialization"
    attempts: int = 0


async def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


DatabaseDep = Annotated[Database, Depends(_database)]


def _router(faults: Faults) -> APIRouter:
    router = APIRouter(prefix="/v1/demo")

    @router.post("/notes", status_code=201)
    async def create_note(body: NoteIn, database: DatabaseDep) -> dict[str, object]:
        faults.attempts += 1
        async with database.write() as connection:
            row = await fetch_one(connection, _INSERT, {"id": new_id(), "text": body.text})
            assert row is not None
            if faults.remaining > 0:
                faults.remaining -= 1
                await connection.execute(FAULT_SQL[faults.kind])
        return {"id": str(row[0]), "text": body.text, "version": row[1]}

    @router.post("/notes-then-conflict")
    async def create_then_conflict(body: NoteIn, database: DatabaseDep) -> None:
        async with database.write() as connection:
            await execute(connection, _INSERT, {"id": new_id(), "text": body.text})
            raise Conflict("This note conflicts.")

    @router.get("/sleep")
    async def sleep_holding_connection(
        database: DatabaseDep, seconds: float = 1.0
    ) -> dict[str, float]:
        async with database.read() as connection:
            await connection.execute("SELECT pg_sleep(%s)", (seconds,))
        return {"slept": seconds}

    @router.get("/errors/{kind}")
    async def raise_error(kind: str) -> None:
        if kind == "precondition":
            raise PreconditionFailed("The ETag does not match.")
        if kind == "throttled":
            raise TooManyRequests("Slow down.", retry_after=7)
        raise RuntimeError("secret internal detail: password=hunter2")

    @router.post("/form")
    async def form(username: Annotated[str, Form()]) -> dict[str, str]:
        return {"username": username}

    @router.get("/items/{number}")
    async def item(number: int, limit: Annotated[int, Query(ge=1, le=10)] = 5) -> dict[str, int]:
        return {"number": number, "limit": limit}

    return router


def demo_app(
    database: URL, *, checks: dict[str, ReadinessCheck] | None = None, **settings: object
) -> tuple[FastAPI, Faults]:
    faults = Faults()
    app = create_service_app(
        name="demo",
        version="0.0.1",
        settings=ServiceSettings.model_validate(
            {"database_url": database.render_as_string(hide_password=False), **settings}
        ),
        routers=[_router(faults)],
        public_prefix="/v1/demo",
        readiness_checks=checks,
    )
    return app, faults
