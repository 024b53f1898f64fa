"""The auth routes over HTTP: registration, the password grant, the discovery documents."""

import time
import uuid
from pathlib import Path

import httpx
import jwt
import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.keys import load_signing_keys
from taskstack.auth.main import create_app
from tests.support.auth import STRONG_PASSWORD, auth_settings, login, register, register_id
from tests.support.postgres import PostgresServer
from tests.support.servers import serve

# ---- POST /v1/auth/register: normalised unique e-mail, the password policy, per-IP throttling.


def users(postgres: PostgresServer, database: URL) -> list[tuple[str, str]]:
    with psycopg.connect(postgres.libpq(database)) as conn:
        rows = conn.execute("SELECT email, password_hash FROM auth.user ORDER BY email").fetchall()
    return [(str(email), str(password_hash)) for email, password_hash in rows]


def test_register_creates_an_account(
    client: httpx.Client, postgres: PostgresServer, database_url: URL
) -> None:
    response = register(client, "  Ada.Lovelace@Example.COM ")
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"email", "detail"}
    assert body["email"] == "Ada.Lovelace@example.com"
    user_id = register_id(client, "bob@example.com")
    assert uuid.UUID(user_id).version == 7
    [(email, password_hash), _] = users(postgres, database_url)
    assert email == "Ada.Lovelace@example.com"
    assert password_hash.startswith("$2b$04$")  # bcrypt, at the configured cost
    assert STRONG_PASSWORD not in password_hash


@pytest.mark.parametrize("again", ["ada@example.com", "ADA@EXAMPLE.COM", " Ada@Example.com"])
def test_a_taken_email_is_answered_as_a_new_one_whatever_its_case(
    client: httpx.Client, postgres: PostgresServer, database_url: URL, again: str
) -> None:
    first = register(client, "Ada@example.com")
    response = register(client, again, "another fine passphrase")
    assert response.status_code == first.status_code == 202
    assert set(response.json()) == set(first.json())
    assert len(users(postgres, database_url)) == 1
    # The first password still signs in; the second does not.
    assert login(client, "ada@example.com").status_code == 200
    assert login(client, "ada@example.com", "another fine passphrase").status_code == 400


@pytest.mark.parametrize(
    ("password", "status"),
    [
        ("x7#kQ2m", 422),  # 7 characters
        ("x7#kQ2mZ", 202),  # 8
        ("Zq8!" * 16, 202),  # 64
        ("Zq8!" * 256, 202),  # 1024
        ("Zq8!" * 256 + "a", 422),  # 1025
        ("密码安全" * 16, 202),  # 64 characters of a non-Latin script
        ("  leading and trailing spaces kept  ", 202),
    ],
)
def test_password_length_rules(client: httpx.Client, password: str, status: int) -> None:
    response = register(client, f"{uuid.uuid4().hex}@example.com", password)
    assert response.status_code == status, response.text


def test_a_long_non_latin_password_signs_in_exactly(client: httpx.Client) -> None:
    password = "пароль-очень-длинный-и-надёжный-" * 2
    assert len(password) == 64
    assert register(client, "ivan@example.com", password).status_code == 202
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
        assert statuses == [202, 202, 202]
        blocked = register(client, "user3@example.com")
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1


# ---- POST /v1/auth/token, password grant: tokens, RFC 6749 errors, the 72-byte bcrypt trap.

OAUTH_ERROR_HEADERS = {"cache-control": "no-store", "pragma": "no-cache"}


def test_password_grant_issues_an_access_and_a_refresh_token(
    client: httpx.Client, keys_dir: Path
) -> None:
    user_id = register_id(client, "ada@example.com")
    response = login(client, "ada@example.com")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert len(body["refresh_token"]) >= 43  # 256 bits, base64url

    keys = load_signing_keys(keys_dir, None, production=False)
    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"alg": "ES256", "kid": keys.signing_kid, "typ": "at+jwt"}
    claims = jwt.decode(
        body["access_token"],
        keys.public_keys[keys.signing_kid],
        algorithms=["ES256"],
        audience="taskstack",
        issuer="http://127.0.0.1:8000",
    )
    assert set(claims) == {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "email_verified"}
    assert claims["sub"] == user_id
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 60


def comparable(response: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    headers = {k: v for k, v in response.headers.items() if k not in ("date", "x-request-id")}
    return response.status_code, response.content, headers


def test_unknown_email_and_wrong_password_answer_alike(client: httpx.Client) -> None:
    register(client, "ada@example.com")
    wrong_password = login(client, "ada@example.com", "not the password at all")
    unknown_email = login(client, "nobody@example.com", "not the password at all")
    assert wrong_password.status_code == 400
    assert wrong_password.json() == {
        "error": "invalid_grant",
        "error_description": "The e-mail address or password is not correct.",
    }
    assert comparable(wrong_password) == comparable(unknown_email)
    assert OAUTH_ERROR_HEADERS.items() <= wrong_password.headers.items()


def test_login_is_case_insensitive_in_the_email_only(client: httpx.Client) -> None:
    register(client, "Ada@Example.com")
    assert login(client, "  ADA@example.COM ").status_code == 200
    assert login(client, "ada@example.com", STRONG_PASSWORD.upper()).status_code == 400


def test_no_silent_truncation_at_72_bytes(client: httpx.Client) -> None:
    assert register(client, "ada@example.com", "a" * 72 + "x").status_code == 202
    assert login(client, "ada@example.com", "a" * 72 + "x").status_code == 200
    assert login(client, "ada@example.com", "a" * 72 + "y").status_code == 400


@pytest.mark.parametrize(
    "password", [b"a" * 1025, b"a" * 100_000, b"abc%00def", b"%ED%B3%BF" * 10, b"%FF%FEabcdefgh"]
)
def test_odd_passwords_at_login_are_a_plain_invalid_grant(
    client: httpx.Client, password: bytes
) -> None:
    register(client, "ada@example.com")
    response = client.post(
        "/v1/auth/token",
        content=b"grant_type=password&username=ada%40example.com&password=" + password,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password", "username": "ada@example.com"}, "invalid_request"),
        ({"grant_type": "password", "password": "x"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        (
            {"grant_type": ["password", "password"], "username": "a@b.c", "password": "p"},
            "invalid_request",
        ),
    ],
)
def test_token_request_errors_follow_rfc_6749(
    client: httpx.Client, form: dict[str, str], error: str
) -> None:
    response = client.post("/v1/auth/token", data=form)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == error
    assert OAUTH_ERROR_HEADERS.items() <= response.headers.items()


def test_a_json_token_request_is_415(client: httpx.Client) -> None:
    response = client.post(
        "/v1/auth/token", json={"grant_type": "password", "username": "a", "password": "b"}
    )
    assert response.status_code == 415


def test_the_hash_is_upgraded_when_the_configured_cost_rises(
    client: httpx.Client,
    migrated_database: URL,
    postgres: PostgresServer,
    database_url: URL,
    keys_dir: Path,
) -> None:
    register(client, "ada@example.com")

    def stored_hash() -> str:
        with psycopg.connect(postgres.libpq(database_url)) as conn:
            row = conn.execute("SELECT password_hash FROM auth.user").fetchone()
        assert row is not None
        return str(row[0])

    assert stored_hash().startswith("$2b$04$")
    stronger = create_app(auth_settings(migrated_database, keys_dir, auth_bcrypt_cost=6))
    with serve(stronger) as base_url, httpx.Client(base_url=base_url) as upgraded:
        assert login(upgraded, "ada@example.com").status_code == 200
        assert stored_hash().startswith("$2b$06$")
        assert login(upgraded, "ada@example.com").status_code == 200
    assert login(client, "ada@example.com").status_code == 200


def test_each_login_starts_its_own_session(
    client: httpx.Client, postgres: PostgresServer, database_url: URL
) -> None:
    register(client, "ada@example.com")
    tokens = {login(client, "ada@example.com").json()["refresh_token"] for _ in range(3)}
    assert len(tokens) == 3
    with psycopg.connect(postgres.libpq(database_url)) as conn:
        families = conn.execute("SELECT count(*) FROM auth.refresh_token_family").fetchone()
        stored = conn.execute("SELECT token_hash FROM auth.refresh_token").fetchall()
    assert families == (3,)
    assert all(len(bytes(row[0])) == 32 for row in stored)  # SHA-256 digests, not the tokens
    assert not {bytes(row[0]) for row in stored} & {t.encode() for t in tokens}


def test_user_ids_are_never_reused(client: httpx.Client) -> None:
    ids = {uuid.UUID(register_id(client, f"u{i}@example.com")) for i in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    "username",
    ["nul\x00@example.com", "x" * 1000 + "@example.com", "\x00"],
    ids=["nul", "longer-than-a-throttle-key", "only-nul"],
)
def test_a_username_no_account_can_have_is_an_invalid_grant(
    client: httpx.Client, postgres: PostgresServer, database_url: URL, username: str
) -> None:
    for _ in range(2):
        response = login(client, username)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant"
    with psycopg.connect(postgres.libpq(database_url)) as conn:
        rows = conn.execute("SELECT key, failures FROM auth.throttle_counter").fetchall()
    counters: dict[str, int] = dict(rows)
    # Still counted against the account name, under its digest.
    account_keys = [key for key in counters if key.startswith("login-account:sha256:")]
    assert len(account_keys) == 1 and counters[account_keys[0]] == 2


# ---- The discovery documents: the JWKS and RFC 8414 metadata.


def test_jwks_publishes_public_keys_only_and_is_cacheable(
    client: httpx.Client, keys_dir: Path
) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    [key] = response.json()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert key["kid"] == load_signing_keys(keys_dir, None, production=False).signing_kid


def test_authorization_server_metadata(client: httpx.Client) -> None:
    response = client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    metadata = response.json()
    assert metadata["issuer"] == "http://127.0.0.1:8000"
    assert metadata["token_endpoint"] == "http://127.0.0.1:8000/v1/auth/token"
    assert metadata["jwks_uri"] == "http://127.0.0.1:8000/.well-known/jwks.json"
    assert metadata["revocation_endpoint"] == "http://127.0.0.1:8000/v1/auth/revoke"
    assert metadata["grant_types_supported"] == ["password", "refresh_token"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]


def test_head_on_the_jwks_answers_its_headers_without_the_body(client: httpx.Client) -> None:
    get, head = client.get("/.well-known/jwks.json"), client.head("/.well-known/jwks.json")
    assert head.status_code == 200
    for name in ("content-type", "content-length", "cache-control"):
        assert head.headers[name] == get.headers[name]
    assert int(head.headers["content-length"]) == len(get.content) > 0
    assert head.content == b""
