"""Running the auth service in tests, and talking to it like a client."""

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

from taskstack.auth.config import AuthSettings

STRONG_PASSWORD = "correct horse battery staple"


def auth_settings(database: URL, keys_dir: Path, **overrides: Any) -> AuthSettings:
    """Settings for a test auth service: a cheap bcrypt cost unless a test asks otherwise."""
    return AuthSettings.model_validate(
        {
            "database_url": database.render_as_string(hide_password=False),
            "auth_signing_keys_dir": keys_dir,
            "auth_bcrypt_cost": 4,
            "access_log": False,
            **overrides,
        }
    )


def register(client: httpx.Client, email: str, password: str = STRONG_PASSWORD) -> httpx.Response:
    return client.post("/v1/auth/register", json={"email": email, "password": password})


def register_id(client: httpx.Client, email: str, password: str = STRONG_PASSWORD) -> str:
    """Register ``email`` and return the new account's id (registration's answer does
    not carry it: it is the same for a taken address), read from /me after signing in."""
    assert register(client, email, password).status_code == 202
    token = login(client, email, password).json()["access_token"]
    me = client.get("/v1/auth/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    user_id: str = me.json()["id"]
    return user_id


def login(
    client: httpx.Client, email: str, password: str = STRONG_PASSWORD, **headers: str
) -> httpx.Response:
    return client.post(
        "/v1/auth/token",
        data={"grant_type": "password", "username": email, "password": password},
        headers=headers,
    )


def refresh(client: httpx.Client, refresh_token: str) -> httpx.Response:
    return client.post(
        "/v1/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}
