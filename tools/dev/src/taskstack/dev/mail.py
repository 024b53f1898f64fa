"""A development SMTP sink: a real SMTP server (aiosmtpd) that keeps every message it is
given as an ``.eml`` file in a folder, and says each one's subject and link.

`taskstack up` runs one for its auth service (under the data folder, ``mail/``);
`taskstack mail` lists the latest messages with their links; the tests run one
too, so the services' mail is always sent over real SMTP.
"""

import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

LINK = re.compile(r"https?://\S+")


@dataclass(frozen=True)
class StoredMail:
    path: Path
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def recipient(self) -> str:
        return str(self.message["To"])

    @property
    def text(self) -> str:
        body = self.message.get_body(("plain",))
        return body.get_content() if isinstance(body, EmailMessage) else ""

    @property
    def links(self) -> list[str]:
        return LINK.findall(self.text)


def mail_dir(data_dir: Path) -> Path:
    """Where `taskstack up` keeps the mail of the stack whose data folder is ``data_dir``."""
    return data_dir / "mail"


def read(path: Path) -> StoredMail:
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return StoredMail(path, parsed)


def latest(directory: Path, count: int = 10) -> list[StoredMail]:
    """The ``count`` newest messages in ``directory``, newest first."""
    paths = sorted(directory.glob("*.eml"), reverse=True)[:count]
    return [read(path) for path in paths]


class _Keeper:
    def __init__(self, directory: Path, announce: Callable[[StoredMail], None]):
        self.directory = directory
        self.announce = announce
        self.count = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.count += 1
        # Named so that a name sort is the arrival order.
        path = self.directory / f"{time.time_ns():020d}-{self.count:06d}.eml"
        content = envelope.original_content or b""
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        self.announce(read(path))
        return "250 Message accepted for delivery"


def _print(mail: StoredMail) -> None:
    link = mail.links[0] if mail.links else "(no link)"
    print(f"taskstack: mail to {mail.recipient}: {mail.subject} {link}", flush=True)


@contextmanager
def smtp_sink(
    directory: Path,
    *,
    port: int = 0,
    announce: Callable[[StoredMail], None] = _print,
) -> Iterator[int]:
    """Run a sink on 127.0.0.1 (``port`` 0: a free one) for the block; yields its port."""
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(_Keeper(directory, announce), hostname="127.0.0.1", port=port)
    if port == 0:
        controller.port = _free_port()
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


def _free_port() -> int:

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
