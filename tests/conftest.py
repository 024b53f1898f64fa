"""Fixtures every test package shares: a real PostgreSQL, migrated once, clean per test."""

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key
from taskstack.common.migrations import upgrade
from taskstack.dev.services import SERVICES
from tests.images.engine import ServiceImages
from tests.support.postgres import PostgresServer, postgres_for_tests

SERVICE_SCHEMAS = tuple(service.history.schema for service in SERVICES)
IMAGES = pytest.StashKey[ServiceImages]()


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding one freshly generated auth signing key."""
    directory = tmp_path_factory.mktemp("signing-keys")
    generate_signing_key(directory)
    return directory


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_for_tests() as server:
        try:
            yield server
        finally:
            server.drop_scratch_databases()


@pytest.fixture(scope="session")
def migrated_database(postgres: PostgresServer) -> URL:
    """The database every service test uses; migrations run once per test run."""
    url = postgres.url if not postgres.owns_database else postgres.create_database()
    for service in SERVICES:
        upgrade(url, service.history)
    return url


@pytest.fixture
def database_url(migrated_database: URL, postgres: PostgresServer) -> URL:
    """The migrated database, emptied of every row before the test starts."""
    with psycopg.connect(postgres.libpq(migrated_database), autocommit=True) as conn:
        tables = conn.execute(
            "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname = ANY(%s) AND tablename <> 'alembic_version'",
            (list(SERVICE_SCHEMAS),),
        ).fetchall()
        if tables:
            conn.execute(f"TRUNCATE {', '.join(t for (t,) in tables)} RESTART IDENTITY CASCADE")
    return migrated_database


@pytest.fixture(scope="session")
def service_images(pytestconfig: pytest.Config) -> Iterator[ServiceImages]:
    """The services' images, built from the Dockerfile with buildah on first use
    (tests/images/engine.py); removed when the session ends, their base images kept."""
    images = pytestconfig.stash[IMAGES] = ServiceImages()
    try:
        yield images
    finally:
        images.close()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if (images := config.stash.get(IMAGES, None)) and images.built:
        terminalreporter.section("Images")
        for line in images.report():
            terminalreporter.write_line(line)
