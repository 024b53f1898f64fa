"""Refresh-token rotation and families, revocation, /me, and password change ending sessions."""

import asyncio

import httpx
import psycopg
import pytest
from sqlalchemy.engine import URL

from tests.support.auth import STRONG_PASSWORD, bearer, login, refresh, register
from tests.support.postgres import PostgresServer


@pytest.fixture
def session_tokens(client: httpx.Client) -> dict[str, str]:
    register(client, "ada@example.com")
    tokens: dict[str, str] = login(client, "ada@example.com").json()
    return tokens


def sql(postgres: PostgresServer, database: URL, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(postgres.libpq(database), autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def test_refresh_rotates_the_pair(client: httpx.Client, session_tokens: dict[str, str]) -> None:
    response = refresh(client, session_tokens["refresh_token"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    rotated = response.json()
    assert rotated["refresh_token"] != session_tokens["refresh_token"]
    me = client.get("/v1/auth/me", headers=bearer(rotated["access_token"]))
    assert me.json()["email"] == "ada@example.com"
    assert refresh(client, rotated["refresh_token"]).status_code == 200


def test_a_reused_refresh_token_revokes_its_whole_family(
    client: httpx.Client,
    session_tokens: dict[str, str],
    postgres: PostgresServer,
    database_url: URL,
) -> None:
    first = session_tokens["refresh_token"]
    second = refresh(client, first).json()["refresh_token"]
    reused = refresh(client, first)
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    # The thief's replay has ended the session: the legitimate successor is dead too.
    assert refresh(client, second).status_code == 400
    assert sql(
        postgres, database_url, "SELECT revoked_at IS NOT NULL FROM auth.refresh_token_family"
    ) == [(True,)]


def test_other_sessions_survive_a_reuse(
    client: httpx.Client, session_tokens: dict[str, str]
) -> None:
    other = login(client, "ada@example.com").json()["refresh_token"]
    first = session_tokens["refresh_token"]
    refresh(client, first)
    refresh(client, first)
    assert refresh(client, other).status_code == 200


def test_parallel_refreshes_with_one_token_have_exactly_one_winner(
    auth_server: str, session_tokens: dict[str, str]
) -> None:
    async def race() -> tuple[list[int], int]:
        async with httpx.AsyncClient(base_url=auth_server, timeout=30) as http:
            data = {"grant_type": "refresh_token", "refresh_token": session_tokens["refresh_token"]}
            responses = await asyncio.gather(
                *(http.post("/v1/auth/token", data=data) for _ in range(10))
            )
            winner = next(r for r in responses if r.status_code == 200)
            successor = {
                "grant_type": "refresh_token",
                "refresh_token": winner.json()["refresh_token"],
            }
            after = await http.post("/v1/auth/token", data=successor)
            return sorted(r.status_code for r in responses), after.status_code

    statuses, successor_status = asyncio.run(race())
    assert statuses == [200] + [400] * 9
    # The losers presented a spent token: a reuse, which ended the whole session.
    assert successor_status == 400


def test_an_unknown_refresh_token_is_invalid_grant(client: httpx.Client) -> None:
    response = refresh(client, "not-a-token")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("table", "column"),
    [("refresh_token_family", "expires_at"), ("refresh_token", "idle_expires_at")],
)
def test_expired_sessions_cannot_refresh(
    client: httpx.Client,
    session_tokens: dict[str, str],
    postgres: PostgresServer,
    database_url: URL,
    table: str,
    column: str,
) -> None:
    expire = f"UPDATE auth.{table} SET {column} = now() - interval '1 second'"  # noqa: S608
    sql(postgres, database_url, expire)
    response = refresh(client, session_tokens["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_revoke_ends_the_session(client: httpx.Client, session_tokens: dict[str, str]) -> None:
    response = client.post("/v1/auth/revoke", data={"token": session_tokens["refresh_token"]})
    assert response.status_code == 200
    assert response.content == b""
    assert refresh(client, session_tokens["refresh_token"]).status_code == 400


@pytest.mark.parametrize("token", ["unknown", "x" * 5000, "ü"])
def test_revoke_answers_200_for_any_token(client: httpx.Client, token: str) -> None:
    assert client.post("/v1/auth/revoke", data={"token": token}).status_code == 200


def test_revoke_without_a_token_is_invalid_request(client: httpx.Client) -> None:
    response = client.post("/v1/auth/revoke", data={})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_me_needs_a_bearer_token(client: httpx.Client) -> None:
    missing = client.get("/v1/auth/me")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="taskstack"'
    assert missing.headers["content-type"] == "application/problem+json"
    invalid = client.get("/v1/auth/me", headers=bearer("abc.def.ghi"))
    assert invalid.status_code == 401
    assert invalid.headers["www-authenticate"] == 'Bearer realm="taskstack", error="invalid_token"'
    basic = client.get("/v1/auth/me", headers={"Authorization": "Basic YWRhOnB3"})
    assert basic.status_code == 401


def test_me_returns_the_public_user(client: httpx.Client, session_tokens: dict[str, str]) -> None:
    me = client.get("/v1/auth/me", headers=bearer(session_tokens["access_token"]))
    assert me.status_code == 200
    assert set(me.json()) == {"id", "email", "created_at", "email_verified"}
    assert me.json()["email_verified"] is False


def test_a_token_of_a_deleted_account_is_401(
    client: httpx.Client,
    session_tokens: dict[str, str],
    postgres: PostgresServer,
    database_url: URL,
) -> None:
    sql(postgres, database_url, "DELETE FROM auth.user")
    assert (
        client.get("/v1/auth/me", headers=bearer(session_tokens["access_token"])).status_code == 401
    )


def change_password(
    client: httpx.Client, access_token: str, current: str, new: str
) -> httpx.Response:
    return client.post(
        "/v1/auth/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(access_token),
    )


def test_password_change_ends_every_session(
    client: httpx.Client, session_tokens: dict[str, str]
) -> None:
    other_session = login(client, "ada@example.com").json()["refresh_token"]
    new_password = "a brand new passphrase"
    response = change_password(
        client, session_tokens["access_token"], STRONG_PASSWORD, new_password
    )
    assert response.status_code == 204
    assert refresh(client, session_tokens["refresh_token"]).status_code == 400
    assert refresh(client, other_session).status_code == 400
    assert login(client, "ada@example.com").status_code == 400
    assert login(client, "ada@example.com", new_password).status_code == 200


def test_password_change_needs_the_current_password(
    client: httpx.Client, session_tokens: dict[str, str]
) -> None:
    response = change_password(
        client, session_tokens["access_token"], "wrong guess", "another passphrase"
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert refresh(client, session_tokens["refresh_token"]).status_code == 200


def test_password_change_applies_the_policy(
    client: httpx.Client, session_tokens: dict[str, str]
) -> None:
    for weak in ("short", "password123"):
        response = change_password(client, session_tokens["access_token"], STRONG_PASSWORD, weak)
        assert response.status_code == 422
    assert login(client, "ada@example.com").status_code == 200


def test_password_change_needs_a_token(client: httpx.Client) -> None:
    response = client.post("/v1/auth/password", json={"current_password": "a", "new_password": "b"})
    assert response.status_code == 401
