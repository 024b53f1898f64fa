"""Mail: composed from the templates in ``templates/``, queued in the outbox, sent over SMTP.

A flow that mails calls ``queue(connection, ...)`` inside the write block of the
change that causes the mail, so the mail is committed (or rolled back) with it;
the mail courier (``taskstack.auth.outbox``) sends it afterwards, retrying while
the SMTP server is away. No request ever waits for SMTP.
"""

import html
import string
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import cache
from importlib.resources import files
from typing import Any, Literal
from urllib.parse import urlencode

import aiosmtplib
from sqlalchemy import bindparam, func, insert

from taskstack.auth.config import AuthSettings
from taskstack.auth.models import mail_outbox_table
from taskstack.auth.outbox import OutboxTable, PermanentFailure
from taskstack.common.db import Connection, Statement, execute
from taskstack.common.models import new_id

Template = Literal["verify", "reset", "password_changed", "registration_attempt", "account_deleted"]
# Pages of the client application at PUBLIC_URL that take a mailed token and call the API.
VERIFY_PAGE = "/verify-email"
RESET_PAGE = "/reset-password"

_outbox = mail_outbox_table.c
MAIL_OUTBOX = OutboxTable.of(
    mail_outbox_table,
    [_outbox.id, _outbox.recipient, _outbox.subject, _outbox.text_body, _outbox.html_body],
)
_QUEUE = Statement.of(
    insert(mail_outbox_table).values(
        id=bindparam("id"),
        recipient=bindparam("recipient"),
        subject=bindparam("subject"),
        text_body=bindparam("text_body"),
        html_body=bindparam("html_body"),
        created_at=func.now(),
        next_attempt_at=func.now(),
        attempts=0,
    )
)


@dataclass(frozen=True)
class Mail:
    recipient: str
    subject: str
    text_body: str
    html_body: str


@cache
def _template(name: str) -> string.Template:
    return string.Template(files("taskstack.auth").joinpath("templates", name).read_text())


def compose(template: Template, recipient: str, **values: Any) -> Mail:
    """The mail ``template`` says, for ``recipient``; ``values`` fill its placeholders
    (escaped in the HTML body)."""
    values = {"email": recipient, **values}
    escaped = {name: html.escape(str(value)) for name, value in values.items()}
    return Mail(
        recipient=recipient,
        subject=_template(f"{template}.subject").substitute(values).strip(),
        text_body=_template(f"{template}.txt").substitute(values),
        html_body=_template(f"{template}.html").substitute(escaped),
    )


def page(settings: AuthSettings, path: str) -> str:
    return settings.link_base + path


def link(settings: AuthSettings, page: str, token: str) -> str:
    return f"{settings.link_base}{page}?{urlencode({'token': token})}"


async def queue(connection: Connection, mail: Mail) -> None:
    """Queue ``mail`` in the caller's transaction."""
    await execute(
        connection,
        _QUEUE,
        {
            "id": new_id(),
            "recipient": mail.recipient,
            "subject": mail.subject,
            "text_body": mail.text_body,
            "html_body": mail.html_body,
        },
    )


def message(settings: AuthSettings, mail: Mail) -> EmailMessage:
    """The MIME message of ``mail``: plain text with an HTML alternative."""
    msg = EmailMessage()
    msg["From"] = settings.smtp_sender
    msg["To"] = mail.recipient
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.smtp_sender.rpartition("@")[2].strip("> "))
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    msg.set_content(mail.text_body)
    msg.add_alternative(mail.html_body, subtype="html")
    return msg


class SmtpSender:
    """Sends one mail per call over a fresh SMTP connection (mail is rare; no pool)."""

    def __init__(self, settings: AuthSettings):
        assert settings.smtp_host is not None
        self.settings = settings

    async def __call__(self, row: tuple[Any, ...]) -> None:
        _, recipient, subject, text_body, html_body = row
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                message(settings, Mail(recipient, subject, text_body, html_body)),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_user,
                password=password,
                use_tls=settings.smtp_security == "tls",
                start_tls=settings.smtp_security == "starttls",
                timeout=settings.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # A 5xx for the recipient will not change on a retry; a 4xx might.
            if all(500 <= error.code < 600 for error in exc.recipients):
                raise PermanentFailure("the SMTP server refused the recipient") from None
            raise
