"""Mail goes through the outbox and a real SMTP server: retried while it is away, sent once
by cooperating replicas, composed from the templates."""

import contextlib
import socket
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import URL

from taskstack.auth.mail import compose, message
from taskstack.auth.main import create_app
from taskstack.dev.mail import smtp_sink
from tests.support.auth import auth_settings
from tests.support.mail import wait_for_mail
from tests.support.postgres import PostgresServer
from tests.support.servers import serve


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _queue(postgres: PostgresServer, url: URL, recipients: list[str]) -> None:
    with psycopg.connect(postgres.libpq(url), autocommit=True) as conn:
        for recipient in recipients:
            conn.execute(
                "INSERT INTO auth.mail_outbox (id, recipient, subject, text_body, html_body,"
                " created_at, next_attempt_at, attempts) VALUES (gen_random_uuid(), %s, %s,"
                " 'text http://example.com/x', '<p>html</p>', now(), now(), 0)",
                (recipient, f"hello {recipient}"),
            )


def _outbox(postgres: PostgresServer, url: URL) -> list[tuple[int, str | None]]:
    with psycopg.connect(postgres.libpq(url), autocommit=True) as conn:
        return conn.execute("SELECT attempts, last_error FROM auth.mail_outbox").fetchall()


def _mail_settings(port: int) -> dict[str, object]:
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_timeout_seconds": 2,
        "outbox_poll_seconds": 0.05,
        "outbox_retry_base_seconds": 0.2,
        "outbox_retry_max_seconds": 0.5,
    }


def test_a_queued_mail_is_sent_as_text_and_html_then_leaves_the_outbox(
    migrated_database: URL,
    database_url: URL,
    postgres: PostgresServer,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    with smtp_sink(tmp_path, announce=lambda _: None) as port:
        settings = auth_settings(migrated_database, keys_dir, **_mail_settings(port))
        with serve(create_app(settings)):
            _queue(postgres, database_url, ["ada@example.com"])
            (mail,) = wait_for_mail(tmp_path)
            deadline = time.monotonic() + 5
            while _outbox(postgres, database_url) and time.monotonic() < deadline:
                time.sleep(0.05)
    assert mail.recipient == "ada@example.com"
    assert mail.subject == "hello ada@example.com"
    assert mail.links == ["http://example.com/x"]
    assert mail.message.get_body(("html",)) is not None
    assert _outbox(postgres, database_url) == []


def test_mail_waits_in_the_outbox_while_smtp_is_down_and_is_sent_once_it_is_back(
    migrated_database: URL,
    database_url: URL,
    postgres: PostgresServer,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    port = _free_port()  # nothing listens there yet
    settings = auth_settings(migrated_database, keys_dir, **_mail_settings(port))
    with serve(create_app(settings)):
        _queue(postgres, database_url, ["ada@example.com"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = _outbox(postgres, database_url)
            if rows and rows[0][0] >= 2:
                break
            time.sleep(0.05)
        attempts, error = _outbox(postgres, database_url)[0]
        assert attempts >= 2 and error is not None  # retried, and why it failed is kept
        with smtp_sink(tmp_path, port=port, announce=lambda _: None):
            assert [m.recipient for m in wait_for_mail(tmp_path)] == ["ada@example.com"]


def test_replicas_share_the_outbox_without_sending_a_mail_twice(
    migrated_database: URL,
    database_url: URL,
    postgres: PostgresServer,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    recipients = [f"user{n}@example.com" for n in range(40)]
    _queue(postgres, database_url, recipients)
    with smtp_sink(tmp_path, announce=lambda _: None) as port:
        settings = auth_settings(migrated_database, keys_dir, **_mail_settings(port))
        with contextlib.ExitStack() as replicas:
            for _ in range(3):
                replicas.enter_context(serve(create_app(settings)))
            mails = wait_for_mail(tmp_path, len(recipients))
            time.sleep(0.5)  # a duplicate, were there one, would arrive by now
            mails = wait_for_mail(tmp_path, len(recipients))
    assert sorted(m.recipient for m in mails) == sorted(recipients)


def test_html_values_are_escaped_and_the_message_has_both_parts(keys_dir: Path) -> None:
    mail = compose("verify", "a<b>@example.com", link="http://x/?token=1&a=2", hours=24)
    assert "a&lt;b&gt;@example.com" in mail.html_body
    assert "http://x/?token=1&amp;a=2" in mail.html_body
    assert "http://x/?token=1&a=2" in mail.text_body
    settings = auth_settings(URL.create("postgresql", database="x"), keys_dir)
    msg = message(settings, mail)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "Confirm your e-mail address"
