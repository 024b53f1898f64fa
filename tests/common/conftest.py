from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from tests.common.demo import COMMIT_FAULT_DDL, SCHEMA, DemoTable, Faults, demo_app
from tests.support.postgres import PostgresServer
from tests.support.servers import serve


@pytest.fixture(scope="session")
def demo_database(postgres: PostgresServer) -> URL:
    url = postgres.create_database("taskstack_demo")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        DemoTable.metadata.create_all(conn)
        for statement in COMMIT_FAULT_DDL:
            conn.execute(text(statement))
    engine.dispose()
    return url


@pytest.fixture
def clean_demo_database(demo_database: URL) -> URL:
    engine = create_engine(demo_database)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {SCHEMA}.note"))
    engine.dispose()
    return demo_database


def count_notes(url: URL) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text(f"SELECT count(*) FROM {SCHEMA}.note")).scalar_one()  # noqa: S608
    engine.dispose()
    return int(count)


@pytest.fixture(scope="module")
def demo_server(demo_database: URL) -> Iterator[tuple[str, Faults]]:
    app, faults = demo_app(demo_database)
    with serve(app) as base_url:
        yield base_url, faults


@pytest.fixture
def demo(demo_server: tuple[str, Faults], clean_demo_database: URL) -> Iterator[httpx.Client]:
    base_url, faults = demo_server
    faults.remaining, faults.attempts = 0, 0
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


@pytest.fixture
def faults(demo_server: tuple[str, Faults]) -> Faults:
    return demo_server[1]
