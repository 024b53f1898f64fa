"""Both services served for real, with a registered user and a real access token."""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from tests.support.auth import STRONG_PASSWORD, login, register
from tests.support.processes import service_process

# Fuzzing fails thousands of logins and registers hundreds of accounts from one
# address in minutes: the throttle would turn most answers into 429s and hide
# what the handlers do. Its behaviour has tests of its own (tests/auth/test_throttle.py).
UNTHROTTLED = {
    "AUTH_LOGIN_FAILURES_PER_ACCOUNT": "1000000",
    "AUTH_LOGIN_FAILURES_PER_IP": "1000000",
    "AUTH_REGISTRATIONS_PER_IP": "1000000",
}
QUIET = {"ACCESS_LOG": "false", "LOG_LEVEL": "WARNING"}


# Each service is its own uvicorn process, as in production: the fuzzer, auth and
# tasks then run on separate cores instead of sharing one interpreter lock.
@pytest.fixture(scope="module")
def auth_url(migrated_database: URL, keys_dir: Path) -> Iterator[str]:
    env = {
        "DATABASE_URL": migrated_database.render_as_string(hide_password=False),
        "AUTH_SIGNING_KEYS_DIR": str(keys_dir),
        "AUTH_BCRYPT_COST": "4",
        **QUIET,
        **UNTHROTTLED,
    }
    with service_process("taskstack.auth.main:create_app", env) as auth:
        yield auth.base_url


@pytest.fixture(scope="module")
def tasks_url(migrated_database: URL, auth_url: str) -> Iterator[str]:
    env = {
        "DATABASE_URL": migrated_database.render_as_string(hide_password=False),
        "JWKS_URL": f"{auth_url}/.well-known/jwks.json",
        **QUIET,
    }
    with service_process("taskstack.tasks.main:create_app", env, ready_path="/readyz") as tasks:
        yield tasks.base_url


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    access_token: str


def signed_up(auth_url: str, email: str) -> Account:
    """Register ``email`` through auth and sign in: a real user with a real access token."""
    with httpx.Client(base_url=auth_url, timeout=30) as client:
        assert register(client, email).status_code == 202
        answer = login(client, email)
        assert answer.status_code == 200, answer.text
        return Account(email, STRONG_PASSWORD, answer.json()["access_token"])
