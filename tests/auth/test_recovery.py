"""Verification and password reset, through the API and a real SMTP server."""

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.main import create_app
from taskstack.dev.mail import StoredMail, smtp_sink
from tests.support.auth import STRONG_PASSWORD, auth_settings, bearer, login, refresh, register
from tests.support.mail import wait_for_mail
from tests.support.postgres import PostgresServer
from tests.support.servers import serve

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    directory = tmp_path_factory.mktemp("mail")
    with smtp_sink(directory, announce=lambda _: None) as port:
        yield directory, port


@pytest.fixture(scope="module")
def mail_server(migrated_database: URL, keys_dir: Path, mailbox: tuple[Path, int]) -> Iterator[str]:
    settings = auth_settings(
        migrated_database,
        keys_dir,
        smtp_host="127.0.0.1",
        smtp_port=mailbox[1],
        smtp_security="none",
        public_url="https://app.example.com",
        auth_reset_token_seconds=120,
    )
    with serve(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture
def client(
    mail_server: str, database_url: URL, mailbox: tuple[Path, int]
) -> Iterator[httpx.Client]:
    for old in mailbox[0].glob("*.eml"):
        old.unlink()
    with httpx.Client(base_url=mail_server, timeout=30) as http:
        yield http


def _token(mail: StoredMail, page: str) -> str:
    (link,) = mail.links
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"https://app.example.com{page}"
    return parse_qs(parts.query)["token"][0]


def _mail(mailbox: tuple[Path, int], to: str, count: int = 1) -> StoredMail:
    return wait_for_mail(mailbox[0], count, to=to)[count - 1]


def test_registration_mails_a_link_that_verifies_the_address_once(
    client: httpx.Client, mailbox: tuple[Path, int]
) -> None:
    assert register(client, "ada@example.com").status_code == 202
    mail = _mail(mailbox, "ada@example.com")
    assert mail.subject == "Confirm your e-mail address"
    token = _token(mail, "/verify-email")
    access = login(client, "ada@example.com").json()["access_token"]
    assert jwt.decode(access, options={"verify_signature": False})["email_verified"] is False
    assert client.post("/v1/auth/verify-email", json={"token": token}).status_code == 204
    again = client.post("/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and again.headers["content-type"] == "application/problem+json"
    tokens = login(client, "ada@example.com").json()
    me = client.get("/v1/auth/me", headers=bearer(tokens["access_token"])).json()
    assert me["email_verified"] is True
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert claims["email_verified"] is True
    refreshed = refresh(client, tokens["refresh_token"]).json()["access_token"]
    assert jwt.decode(refreshed, options={"verify_signature": False})["email_verified"] is True


def test_registering_a_taken_address_mails_its_owner_instead(
    client: httpx.Client, mailbox: tuple[Path, int]
) -> None:
    register(client, "ada@example.com")
    assert register(client, "ADA@example.com", "another fine passphrase").status_code == 202
    mails = wait_for_mail(mailbox[0], 2)
    assert sorted(m.subject for m in mails) == [
        "Confirm your e-mail address",
        "Someone tried to register with your address",
    ]


@pytest.mark.parametrize("token", ["nope", "x" * 5000, ""])
def test_a_made_up_token_is_a_clear_400_or_422(client: httpx.Client, token: str) -> None:
    response = client.post("/v1/auth/verify-email", json={"token": token})
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"


def test_a_reset_sets_the_password_ends_every_session_and_mails_a_notice(
    client: httpx.Client, mailbox: tuple[Path, int]
) -> None:
    register(client, "ada@example.com")
    old = login(client, "ada@example.com").json()
    requested = client.post("/v1/auth/password-reset", json={"email": "ada@example.com"})
    assert requested.status_code == 202
    token = _token(_mail(mailbox, "ada@example.com", 2), "/reset-password")
    weak = client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": "short"}
    )
    assert weak.status_code == 422  # the same rules as registration; the link still works
    confirmed = client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert confirmed.status_code == 204, confirmed.text
    assert _mail(mailbox, "ada@example.com", 3).subject == "Your password was changed"
    assert login(client, "ada@example.com").status_code == 400
    assert login(client, "ada@example.com", NEW_PASSWORD).status_code == 200
    assert refresh(client, old["refresh_token"]).status_code == 400
    reused = client.post(
        "/v1/auth/password-reset/confirm", json={"token": token, "new_password": STRONG_PASSWORD}
    )
    assert reused.status_code == 400


def test_a_reset_token_does_not_verify_and_a_verify_token_does_not_reset(
    client: httpx.Client, mailbox: tuple[Path, int]
) -> None:
    register(client, "ada@example.com")
    verify = _token(_mail(mailbox, "ada@example.com"), "/verify-email")
    wrong = client.post(
        "/v1/auth/password-reset/confirm", json={"token": verify, "new_password": NEW_PASSWORD}
    )
    assert wrong.status_code == 400


def test_an_expired_reset_link_is_refused(
    client: httpx.Client, mailbox: tuple[Path, int], postgres: PostgresServer, database_url: URL
) -> None:
    register(client, "ada@example.com")
    client.post("/v1/auth/password-reset", json={"email": "ada@example.com"})
    token = _token(_mail(mailbox, "ada@example.com", 2), "/reset-password")
    with psycopg.connect(postgres.libpq(database_url), autocommit=True) as conn:
        conn.execute("UPDATE auth.one_time_token SET expires_at = now() - interval '1 second'")
        assert all(
            len(h) == 32 for (h,) in conn.execute("SELECT token_hash FROM auth.one_time_token")
        )  # only digests are stored
    confirm = {"token": token, "new_password": NEW_PASSWORD}
    assert client.post("/v1/auth/password-reset/confirm", json=confirm).status_code == 400


def test_reset_and_resend_answer_alike_for_an_unknown_address_and_mail_nobody(
    client: httpx.Client, mailbox: tuple[Path, int]
) -> None:
    register(client, "ada@example.com")
    _mail(mailbox, "ada@example.com")
    for path in ("/v1/auth/password-reset", "/v1/auth/verify-email/resend"):
        known = client.post(path, json={"email": "ada@example.com"})
        unknown = client.post(path, json={"email": "zed@example.com"})
        assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
        assert known.status_code == 202
    mails = wait_for_mail(mailbox[0], 3)
    assert {m.recipient for m in mails} == {"ada@example.com"}


def test_mail_requests_are_throttled_per_address(client: httpx.Client) -> None:
    statuses = [
        client.post("/v1/auth/password-reset", json={"email": "zed@example.com"}).status_code
        for _ in range(5)
    ]
    assert statuses[:3] == [202, 202, 202] and statuses[-1] == 429


def test_an_unverified_account_cannot_sign_in_when_verification_is_required(
    migrated_database: URL, database_url: URL, keys_dir: Path, mailbox: tuple[Path, int]
) -> None:
    settings = auth_settings(
        migrated_database,
        keys_dir,
        auth_require_verified_email=True,
        smtp_host="127.0.0.1",
        smtp_port=mailbox[1],
        smtp_security="none",
    )
    with serve(create_app(settings)) as base, httpx.Client(base_url=base) as c:
        register(c, "ada@example.com")
        refused = login(c, "ada@example.com")
        assert refused.status_code == 400
        assert "verify your e-mail" in refused.json()["error_description"].lower()
        assert login(c, "ada@example.com", "a wrong password").json()["error_description"] == (
            "The e-mail address or password is not correct."
        )  # only the password's holder learns the address is unverified
