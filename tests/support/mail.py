"""A real SMTP server for tests (the development sink), and waiting for its messages."""

import time
from pathlib import Path

from taskstack.dev.mail import StoredMail, latest


def wait_for_mail(
    directory: Path, count: int = 1, *, to: str | None = None, timeout: float = 15.0
) -> list[StoredMail]:
    """The messages in ``directory`` (to ``to``, if given), oldest first, once there are
    at least ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        mails = [m for m in reversed(latest(directory, 10_000)) if to is None or m.recipient == to]
        if len(mails) >= count or time.monotonic() > deadline:
            assert len(mails) >= count, f"{len(mails)} mails of {count} arrived in {timeout} s"
            return mails
        time.sleep(0.05)
