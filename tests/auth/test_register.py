"""POST /v1/auth/register: normalised unique e-mail, the password policy, per-IP throttling."""

import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.main import create_app
from tests.support.auth import STRONG_PASSWORD, auth_settings, login, register
from tests.support.postgres import PostgresServer
from tests.support.servers import serve


def users(postgres: PostgresServer, database: URL) -> list[tuple[str, str]]:
    with psycopg.connect(postgres.libpq(database)) as conn:
        rows = conn.execute("SELECT email, password_hash FROM auth.user ORDER BY email").fetchall()
    return [(str(email), str(password_hash)) for email, password_hash in rows]


def test_register_creates_an_account(
    client: httpx.Client, postgres: PostgresServer, database_url: URL
) -> None:
    response = register(client, "  Ada.Lovelace@Example.COM ")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "email", "created_at"}
    assert uuid.UUID(body["id"]).version == 7
    assert body["email"] == "Ada.Lovelace@example.com"
    [(email, password_hash)] = users(postgres, database_url)
    assert email == "Ada.Lovelace@example.com"
    assert password_hash.startswith("$2b$04$")  # bcrypt, at the configured cost
    assert STRONG_PASSWORD not in password_hash


@pytest.mark.parametrize("again", ["ada@example.com", "ADA@EXAMPLE.COM", " Ada@Example.com"])
def test_a_taken_email_is_409_whatever_its_case(
    client: httpx.Client, postgres: PostgresServer, database_url: URL, again: str
) -> None:
    assert register(client, "Ada@example.com").status_code == 201
    response = register(client, again, "another fine passphrase")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert len(users(postgres, database_url)) == 1


@pytest.mark.parametrize(
    ("password", "status"),
    [
        ("x7#kQ2m", 422),  # 7 characters
        ("x7#kQ2mZ", 201),  # 8
        ("Zq8!" * 16, 201),  # 64
        ("Zq8!" * 256, 201),  # 1024
        ("Zq8!" * 256 + "a", 422),  # 1025
        ("密码安全" * 16, 201),  # 64 characters of a non-Latin script
        ("  leading and trailing spaces kept  ", 201),
    ],
)
def test_password_length_rules(client: httpx.Client, password: str, status: int) -> None:
    response = register(client, f"{uuid.uuid4().hex}@example.com", password)
    assert response.status_code == status, response.text


def test_a_long_non_latin_password_signs_in_exactly(client: httpx.Client) -> None:
    password = "пароль-очень-длинный-и-надёжный-" * 2
    assert len(password) == 64
    assert register(client, "ivan@example.com", password).status_code == 201
    assert login(client, "ivan@example.com", password).status_code == 200
    assert login(client, "ivan@example.com", password.upper()).status_code == 400


@pytest.mark.parametrize(
    "password", ["password", "password1", "qwertyuiop", "PASSWORD123", "iloveyou1"]
)
def test_common_passwords_are_refused_with_the_reason(client: httpx.Client, password: str) -> None:
    response = register(client, "ada@example.com", password)
    assert response.status_code == 422
    assert "common" in response.json()["detail"]


def test_the_email_address_as_password_is_refused(client: httpx.Client) -> None:
    response = register(client, "grace.hopper@example.com", "grace.hopper@example.com")
    assert response.status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        b'{"email": "ada@example.com", "password": "abc\\u0000defghijk"}',
        b'{"email": "ada@example.com", "password": "abc\\ud800defghijk"}',
        b'{"email": "ada@example.com\\u0000", "password": "a fine passphrase"}',
        b'{"email": "not-an-email", "password": "a fine passphrase"}',
        b'{"email": "ada@example.com", "password": "a fine passphrase", "admin": true}',
        b'{"email": "ada@example.com", "password": 12345678901}',
        b'{"email": "ada@example.com"}',
        b"[]",
    ],
)
def test_malformed_registrations_are_422_and_store_nothing(
    client: httpx.Client, postgres: PostgresServer, database_url: URL, body: bytes
) -> None:
    response = client.post(
        "/v1/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert users(postgres, database_url) == []


def test_a_body_that_is_not_utf8_is_400(client: httpx.Client) -> None:
    body = b'{"email": "ada@example.com", "password": "abc\xff\xfedefghijk"}'
    response = client.post(
        "/v1/auth/register", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_registration_is_throttled_per_client_ip(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    settings = auth_settings(migrated_database, keys_dir, auth_registrations_per_ip=3)
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as client:
        statuses = [register(client, f"user{i}@example.com").status_code for i in range(3)]
        assert statuses == [201, 201, 201]
        blocked = register(client, "user3@example.com")
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1
