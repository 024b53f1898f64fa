"""The development mail sink keeps what it receives over SMTP; `taskstack mail` lists it."""

import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest

from taskstack.dev.cli import main
from taskstack.dev.mail import StoredMail, mail_dir, smtp_sink


def _send(port: int, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", subject
    msg.set_content(body)
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(msg)


def test_the_sink_keeps_and_announces_each_message_and_mail_lists_the_newest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    announced: list[StoredMail] = []
    with smtp_sink(mail_dir(tmp_path), announce=announced.append) as port:
        _send(port, "first", "open http://127.0.0.1:8000/verify-email?token=abc now")
        _send(port, "second", "no link here")
    assert [m.subject for m in announced] == ["first", "second"]
    assert announced[0].links == ["http://127.0.0.1:8000/verify-email?token=abc"]
    assert len(list(mail_dir(tmp_path).glob("*.eml"))) == 2

    main(["mail", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.index("second") < out.index("first")
    assert "    http://127.0.0.1:8000/verify-email?token=abc" in out


def test_mail_says_so_when_there_is_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["mail", "--data-dir", str(tmp_path)])
    assert capsys.readouterr().out == "taskstack: no mail yet\n"
