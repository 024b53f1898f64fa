from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.main import create_app
from tests.support.auth import auth_settings
from tests.support.servers import serve


@pytest.fixture(scope="module")
def auth_server(migrated_database: URL, keys_dir: Path) -> Iterator[str]:
    with serve(create_app(auth_settings(migrated_database, keys_dir))) as base_url:
        yield base_url


@pytest.fixture
def client(auth_server: str, database_url: URL) -> Iterator[httpx.Client]:
    """A client of the shared test auth service; the database is empty at the start."""
    with httpx.Client(base_url=auth_server, timeout=30) as http:
        yield http
