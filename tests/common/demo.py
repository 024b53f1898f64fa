"""A small service built with create_service_app, to test the shared library in use."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Query
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlmodel import SQLModel

from taskstack.common.app import create_service_app
from taskstack.common.db import SessionDep
from taskstack.common.errors import Conflict, PreconditionFailed, TooManyRequests
from taskstack.common.health import ReadinessCheck
from taskstack.common.models import Timestamps, UUIDPrimaryKey, Versioned, schema_metadata
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


def _router(faults: Faults) -> APIRouter:
    router = APIRouter(prefix="/v1/demo")

    @router.post("/notes", status_code=201)
    async def create_note(body: NoteIn, session: SessionDep) -> dict[str, object]:
        faults.attempts += 1
        note = Note(text=body.text)
        session.add(note)
        await session.flush()
        if faults.remaining > 0:
            faults.remaining -= 1
            await (await session.connection()).execute(text(FAULT_SQL[faults.kind]))
        return {"id": str(note.id), "text": note.text, "version": note.version}

    @router.post("/notes-then-conflict")
    async def create_then_conflict(body: NoteIn, session: SessionDep) -> None:
        session.add(Note(text=body.text))
        await session.flush()
        raise Conflict("This note conflicts.")

    @router.get("/sleep")
    async def sleep_holding_connection(
        session: SessionDep, seconds: float = 1.0
    ) -> dict[str, float]:
        await (await session.connection()).execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
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
