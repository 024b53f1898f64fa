"""Closing accounts: deletion by the user or an operator, disabling and enabling.

Each change writes an account event in its own transaction (the account-event
outbox), so the tasks service hears of it at least once whatever happens to
either service afterwards: the event courier pushes it to tasks' internal
endpoint, signed for the internal audience, until tasks acknowledges it.
"""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import bindparam, delete, func, insert, update

from taskstack.auth import mail, refresh_tokens, repository
from taskstack.auth.config import AuthSettings
from taskstack.auth.errors import AccountGone, TooManyAttempts, WrongCurrentPassword
from taskstack.auth.keys import SigningKeys
from taskstack.auth.models import User, account_event_table, user_table
from taskstack.auth.outbox import OutboxTable
from taskstack.auth.passwords import PasswordHasher
from taskstack.auth.throttle import Throttle
from taskstack.common.db import Connection, Database, Statement, execute
from taskstack.common.tokens import INTERNAL_SUBJECT

logger = logging.getLogger(__name__)

_event = account_event_table.c
ACCOUNT_EVENTS = OutboxTable.of(account_event_table, [_event.id, _event.user_id, _event.kind])
_RECORD = Statement.of(
    insert(account_event_table).values(
        user_id=bindparam("user_id"),
        kind=bindparam("kind"),
        created_at=func.now(),
        next_attempt_at=func.now(),
        attempts=0,
    )
)
_user = user_table.c
_DELETE = Statement.of(delete(user_table).where(_user.id == bindparam("id")))
_SET_DISABLED = Statement.of(
    update(user_table)
    .where(_user.id == bindparam("id"))
    .values(
        disabled_at=bindparam("disabled_at"),
        version=_user.version + 1,
        updated_at=func.now(),
    )
)


async def record_event(connection: Connection, user_id: uuid.UUID, kind: str) -> None:
    await execute(connection, _RECORD, {"user_id": user_id, "kind": kind})


@dataclass
class Closure:
    database: Database
    settings: AuthSettings
    hasher: PasswordHasher
    throttle: Throttle
    mail_queued: Callable[[], None]
    event_recorded: Callable[[], None]

    async def delete_own(self, user_id: uuid.UUID, password: str, client_ip: str) -> None:
        """Delete the account after checking its password again (re-authentication)."""
        throttle = self.throttle
        with self.hasher.admission():
            async with self.database.read() as connection:
                user = await repository.find(connection, user_id)
                if user is None or user.disabled_at is not None:
                    raise AccountGone()
                keys = [throttle.login_account.key(user.email)]
                if retry_after := await throttle.retry_after(connection, keys):
                    raise TooManyAttempts(retry_after)
            if not await self.hasher.verify(password, user.password_hash):
                async with self.database.write() as connection:
                    await throttle.record_failure(connection, throttle.login_account, user.email)
                raise WrongCurrentPassword()
        await self.delete(user, actor="user", client_ip=client_ip)

    async def delete(self, user: User, *, actor: str, client_ip: str | None = None) -> None:
        """Delete ``user``: sessions and tokens go with the row; tasks hears of it."""
        async with self.database.write() as connection:
            await record_event(connection, user.id, "deleted")
            await mail.queue(connection, mail.compose("account_deleted", user.email))
            await execute(connection, _DELETE, {"id": user.id})
        self.event_recorded()
        self.mail_queued()
        logger.info(
            "account deleted",
            extra={"user_id": str(user.id), "actor": actor, "client_ip": client_ip},
        )

    async def set_disabled(self, user: User, disabled: bool, *, actor: str) -> None:
        """Disable (no sign-in, no refresh, every session ended) or enable again."""
        async with self.database.write() as connection:
            values = {"id": user.id, "disabled_at": datetime.now(UTC) if disabled else None}
            await execute(connection, _SET_DISABLED, values)
            if disabled:
                await refresh_tokens.revoke_all(connection, user.id)
            await record_event(connection, user.id, "disabled" if disabled else "enabled")
        self.event_recorded()
        logger.info(
            "account disabled" if disabled else "account enabled",
            extra={"user_id": str(user.id), "actor": actor},
        )


class EventPusher:
    """Delivers one account event to the tasks service; any answer but 2xx is a failure
    the courier retries."""

    def __init__(self, settings: AuthSettings, keys: SigningKeys, client: httpx.AsyncClient):
        assert settings.auth_events_url is not None
        self.url = settings.auth_events_url
        self.settings = settings
        self.keys = keys
        self.client = client

    async def __call__(self, row: tuple[Any, ...]) -> None:
        event_id, user_id, kind = row
        token = self.keys.issue_access_token(
            INTERNAL_SUBJECT,
            issuer=self.settings.token_issuer,
            audience=self.settings.internal_token_audience,
            lifetime=60,
        )
        response = await self.client.post(
            self.url,
            json={"id": event_id, "user_id": str(user_id), "kind": kind},
            headers={"Authorization": f"Bearer {token}"},
        )
        response.raise_for_status()
