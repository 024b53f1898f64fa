"""E-mail verification and password reset: the flows after a mailed link.

No flow here tells whether an address has an account. A request for a mail
(a verification resend, a reset) runs the same statements whatever the
address, and one statement decides inside PostgreSQL whether a token and a
mail are written: the answer, its status and its time are the same either way
(tests/auth/test_timing.py). Both requests are throttled per address and per
client IP, in PostgreSQL, like sign-in.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text

from taskstack.auth import mail, one_time_tokens, refresh_tokens, repository
from taskstack.auth.config import AuthSettings
from taskstack.auth.errors import InvalidLink, TooManyAttempts, WeakPassword
from taskstack.auth.metrics import MAIL_REQUESTS
from taskstack.auth.one_time_tokens import Purpose
from taskstack.auth.passwords import PasswordHasher, password_problem
from taskstack.auth.throttle import Throttle
from taskstack.common.db import Connection, Database, Statement, fetch_one
from taskstack.common.models import new_id

logger = logging.getLogger(__name__)


def _mail_for_account(condition: str) -> Statement:
    """One statement: for the active account with the address (and ``condition``), if any,
    replace its unspent tokens of the purpose by a new one and queue its mail."""
    return Statement.of(
        text(
            f"""
        WITH account AS (
            SELECT id FROM auth.user
            WHERE lower(email) = lower(:email) AND disabled_at IS NULL AND {condition}
        ), superseded AS (
            DELETE FROM auth.one_time_token
            WHERE user_id IN (SELECT id FROM account) AND purpose = :purpose AND used_at IS NULL
        ), token AS (
            INSERT INTO auth.one_time_token (id, user_id, purpose, token_hash, created_at,
                                             expires_at)
            SELECT :token_id, id, :purpose, :token_hash, now(), now() + :lifetime FROM account
        ), queued AS (
            INSERT INTO auth.mail_outbox (id, recipient, subject, text_body, html_body,
                                          created_at, next_attempt_at, attempts)
            SELECT :mail_id, :recipient, :subject, :text_body, :html_body, now(), now(), 0
            FROM account
        )
        SELECT count(*) FROM account
        """  # noqa: S608 - the condition is one of the constants below
        )
    )


_RESEND_VERIFICATION = _mail_for_account("email_verified_at IS NULL")
_REQUEST_RESET = _mail_for_account("true")


@dataclass
class Recovery:
    database: Database
    settings: AuthSettings
    hasher: PasswordHasher
    throttle: Throttle
    mail_queued: Callable[[], None]

    async def verify_email(self, token: str) -> None:
        async with self.database.write() as connection:
            user_id = await one_time_tokens.spend(connection, token, Purpose.VERIFY_EMAIL)
            if user_id is None:
                raise InvalidLink()
            await repository.mark_verified(connection, user_id)
        logger.info("e-mail address verified", extra={"user_id": str(user_id)})

    async def resend_verification(self, email: str, client_ip: str) -> None:
        lifetime = timedelta(seconds=self.settings.auth_verification_token_seconds)
        await self._mail_request(
            _RESEND_VERIFICATION, Purpose.VERIFY_EMAIL, email, client_ip, lifetime
        )

    async def request_reset(self, email: str, client_ip: str) -> None:
        lifetime = timedelta(seconds=self.settings.auth_reset_token_seconds)
        await self._mail_request(_REQUEST_RESET, Purpose.RESET_PASSWORD, email, client_ip, lifetime)

    async def _mail_request(
        self,
        statement: Statement,
        purpose: Purpose,
        email: str,
        client_ip: str,
        lifetime: timedelta,
    ) -> None:
        token, token_hash = one_time_tokens.new_token()
        composed = self.compose(purpose, email, token)
        throttle = self.throttle
        async with self.database.write() as connection:
            await self._throttled(connection, email, client_ip)
            row = await fetch_one(
                connection,
                statement,
                {
                    "email": email,
                    "purpose": purpose.value,
                    "token_id": new_id(),
                    "token_hash": token_hash,
                    "lifetime": lifetime,
                    "mail_id": new_id(),
                    "recipient": composed.recipient,
                    "subject": composed.subject,
                    "text_body": composed.text_body,
                    "html_body": composed.html_body,
                },
            )
            await throttle.record_failure(connection, throttle.mail_address, email)
            await throttle.record_failure(connection, throttle.mail_ip, client_ip)
        MAIL_REQUESTS.labels(purpose.value, "accepted").inc()
        if row and row[0]:
            self.mail_queued()

    def compose(self, purpose: Purpose, email: str, token: str) -> mail.Mail:
        settings = self.settings
        if purpose is Purpose.VERIFY_EMAIL:
            link = mail.link(settings, mail.VERIFY_PAGE, token)
            hours = settings.auth_verification_token_seconds // 3600
            return mail.compose("verify", email, link=link, hours=hours)
        link = mail.link(settings, mail.RESET_PAGE, token)
        minutes = settings.auth_reset_token_seconds // 60
        return mail.compose("reset", email, link=link, minutes=minutes)

    async def _throttled(self, connection: Connection, email: str, client_ip: str) -> None:
        throttle = self.throttle
        keys = [throttle.mail_address.key(email), throttle.mail_ip.key(client_ip)]
        if retry_after := await throttle.retry_after(connection, keys):
            MAIL_REQUESTS.labels("any", "throttled").inc()
            logger.info("mail request throttled", extra={"client_ip": client_ip})
            raise TooManyAttempts(retry_after)

    async def confirm_reset(self, token: str, new_password: str) -> None:
        """Set the new password of the token's account and end every session of it."""
        if len(token) > one_time_tokens.MAX_TOKEN_LENGTH:
            raise InvalidLink()
        # The token is checked (not spent) first, so that a weak password can be fixed
        # and sent again with the same link; it is spent with the change below.
        async with self.database.read() as connection:
            user = await repository.holder_of(connection, token, Purpose.RESET_PASSWORD)
        if user is None:
            raise InvalidLink()
        if problem := password_problem(new_password, email=user.email):
            raise WeakPassword(problem)
        with self.hasher.admission():
            password_hash = await self.hasher.hash(new_password)
        reset_page = mail.page(self.settings, mail.RESET_PAGE)
        notice = mail.compose("password_changed", user.email, link=reset_page)
        async with self.database.write() as connection:
            if await one_time_tokens.spend(connection, token, Purpose.RESET_PASSWORD) != user.id:
                raise InvalidLink()  # spent meanwhile by a concurrent confirmation
            await repository.set_password(connection, user.id, password_hash)
            # The mailbox's owner chose it: the address is proven.
            await repository.mark_verified(connection, user.id)
            await refresh_tokens.revoke_all(connection, user.id)
            await mail.queue(connection, notice)
        self.mail_queued()
        logger.info("password reset; sessions ended", extra={"user_id": str(user.id)})
