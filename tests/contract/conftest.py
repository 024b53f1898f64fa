"""Both services served for real, with a registered user and a real access token."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key
from taskstack.auth.main import create_app as create_auth_app
from taskstack.tasks.config import TasksSettings
from taskstack.tasks.main import create_app as create_tasks_app
from tests.support.auth import STRONG_PASSWORD, auth_settings, login, register
from tests.support.servers import serve

# Fuzzing fails thousands of logins and registers hundreds of accounts from one
# address in minutes: the throttle would turn most answers into 429s and hide
# what the handlers do. Its behaviour has tests of its own (tests/auth/test_throttle.py).
UNTHROTTLED = {
    "auth_login_failures_per_account": 1_000_000,
    "auth_login_failures_per_ip": 1_000_000,
    "auth_registrations_per_ip": 1_000_000,
}


def record_reliability(item: int, title: str, figure: str) -> None:
    """One line of the reliability report: the issue's item, its title and the measured figure."""
    print(f"\nreliability item {item} ({title}): {figure}", flush=True)


class Reliability:
    """Prints report lines past pytest's output capture, so a passing run shows them too."""

    def __init__(self, capsys: pytest.CaptureFixture[str]):
        self._capsys = capsys

    def record(self, item: int, title: str, figure: str) -> None:
        with self._capsys.disabled():
            record_reliability(item, title, figure)

    def note(self, text: str) -> None:
        """Detail printed under the figure (what it excludes, and why)."""
        with self._capsys.disabled():
            print(text, flush=True)


@pytest.fixture
def reliability(capsys: pytest.CaptureFixture[str]) -> Reliability:
    return Reliability(capsys)


@pytest.fixture(scope="module")
def signing_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("contract-signing-keys")
    generate_signing_key(directory)
    return directory


@pytest.fixture(scope="module")
def auth_url(migrated_database: URL, signing_keys: Path) -> Iterator[str]:
    settings = auth_settings(migrated_database, signing_keys, log_level="WARNING", **UNTHROTTLED)
    with serve(create_auth_app(settings)) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def tasks_url(migrated_database: URL, auth_url: str) -> Iterator[str]:
    settings = TasksSettings.model_validate(
        {
            "database_url": migrated_database.render_as_string(hide_password=False),
            "jwks_url": f"{auth_url}/.well-known/jwks.json",
            "access_log": False,
            "log_level": "WARNING",
        }
    )
    with serve(create_tasks_app(settings)) as base_url:
        yield base_url


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    access_token: str


def signed_up(auth_url: str, email: str) -> Account:
    """Register ``email`` through auth and sign in: a real user with a real access token."""
    with httpx.Client(base_url=auth_url, timeout=30) as client:
        assert register(client, email).status_code == 201
        answer = login(client, email)
        assert answer.status_code == 200, answer.text
        return Account(email, STRONG_PASSWORD, answer.json()["access_token"])
