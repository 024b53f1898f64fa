"""What the auth service does: register, sign in, refresh, revoke, change passwords.

No FastAPI here. Each step runs in its own short database block (see
``taskstack.common.db``): the flows that hash a password read in one block,
hash with no connection held, and write in another, so a storm of sign-ins
never holds the connections refreshes need while bcrypt runs. An outcome that
must be recorded even though the answer is an error (a failed sign-in counts)
is written in its own block before the error is raised.
"""

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Concatenate, ParamSpec, TypeVar

from taskstack.auth import mail, one_time_tokens, refresh_tokens, repository
from taskstack.auth.closure import Closure
from taskstack.auth.config import AuthSettings
from taskstack.auth.errors import (
    AccountDisabled,
    AccountGone,
    EmailNotVerified,
    InvalidCredentials,
    InvalidRefreshToken,
    TooManyAttempts,
    WeakPassword,
    WrongCurrentPassword,
)
from taskstack.auth.keys import SigningKeys
from taskstack.auth.metrics import LOGINS, REFRESH_TOKEN_REUSE, REGISTRATIONS, TOKENS_ISSUED
from taskstack.auth.models import Registration, RegistrationAccepted, TokenPair, UserPublic
from taskstack.auth.one_time_tokens import Purpose
from taskstack.auth.passwords import PasswordHasher, password_problem
from taskstack.auth.recovery import Recovery
from taskstack.auth.throttle import Throttle
from taskstack.common.db import Database

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _hashing(
    flow: Callable[Concatenate["AuthService", P], Awaitable[R]],
) -> Callable[Concatenate["AuthService", P], Awaitable[R]]:
    """Run a flow that hashes a password inside the hasher's admission, from its first
    step: past the hashing bound it is refused before it touches the database."""

    @functools.wraps(flow)
    async def admitted(auth: "AuthService", /, *args: P.args, **kwargs: P.kwargs) -> R:
        with auth.hasher.admission():
            return await flow(auth, *args, **kwargs)

    return admitted


@dataclass
class AuthService:
    """The auth service's logic and its collaborators, built once per process."""

    database: Database
    settings: AuthSettings
    keys: SigningKeys
    hasher: PasswordHasher
    throttle: Throttle
    # Called after a commit that queued a mail, so this replica's courier sends it now.
    mail_queued: Callable[[], None] = lambda: None
    # Called after a commit that recorded an account event, for this replica's courier.
    event_recorded: Callable[[], None] = lambda: None

    @property
    def recovery(self) -> Recovery:
        return Recovery(self.database, self.settings, self.hasher, self.throttle, self.mail_queued)

    @property
    def closure(self) -> Closure:
        return Closure(
            self.database,
            self.settings,
            self.hasher,
            self.throttle,
            self.mail_queued,
            self.event_recorded,
        )

    @property
    def lifetimes(self) -> refresh_tokens.Lifetimes:
        return refresh_tokens.Lifetimes(
            absolute=timedelta(seconds=self.settings.auth_refresh_token_absolute_seconds),
            idle=timedelta(seconds=self.settings.auth_refresh_token_idle_seconds),
        )

    def _pair(self, user_id: uuid.UUID, refresh_token: str, email_verified: bool) -> TokenPair:
        access_token = self.keys.issue_access_token(
            user_id,
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            lifetime=self.settings.auth_access_token_seconds,
            email_verified=email_verified,
        )
        return TokenPair(
            access_token=access_token,
            expires_in=self.settings.auth_access_token_seconds,
            refresh_token=refresh_token,
        )

    @_hashing
    async def register(self, data: Registration, client_ip: str) -> RegistrationAccepted:
        """Create the account and mail a verification link; for a taken address, mail its
        owner that someone tried. The answer, and its time (the password is hashed either
        way), do not tell which happened."""
        if problem := password_problem(data.password, email=data.email):
            raise WeakPassword(problem)
        throttle = self.throttle
        # Every attempt counts, a taken e-mail included, so registration cannot be
        # used to test addresses faster than the limit allows.
        async with self.database.write() as connection:
            if retry_after := await throttle.retry_after(
                connection, [throttle.register_ip.key(client_ip)]
            ):
                REGISTRATIONS.labels("throttled").inc()
                raise _throttled(retry_after, client_ip)
            await throttle.record_failure(connection, throttle.register_ip, client_ip)
        password_hash = await self.hasher.hash(data.password)
        token, _ = one_time_tokens.new_token()
        verify = Recovery.compose(self.recovery, Purpose.VERIFY_EMAIL, data.email, token)
        attempt = mail.compose(
            "registration_attempt",
            data.email,
            link=mail.page(self.settings, mail.RESET_PAGE),
        )
        lifetime = timedelta(seconds=self.settings.auth_verification_token_seconds)
        async with self.database.write() as connection:
            user = await repository.create_if_new(connection, data.email, password_hash)
            if user is not None:
                await one_time_tokens.store(
                    connection, user.id, Purpose.VERIFY_EMAIL, token, lifetime
                )
            await mail.queue(connection, verify if user is not None else attempt)
        self.mail_queued()
        REGISTRATIONS.labels("created" if user is not None else "taken").inc()
        logger.info(
            "registration accepted",
            extra={"user_id": str(user.id) if user else None, "client_ip": client_ip},
        )
        return RegistrationAccepted(email=data.email)

    @_hashing
    async def password_grant(self, email: str, password: str, client_ip: str) -> TokenPair:
        """Sign in. Unknown e-mail and wrong password look alike, in answer and in time."""
        email = _normalize_login(email)
        throttle = self.throttle
        async with self.database.read() as connection:
            if retry_after := await throttle.retry_after(
                connection, [throttle.login_account.key(email), throttle.login_ip.key(client_ip)]
            ):
                LOGINS.labels("throttled").inc()
                raise _throttled(retry_after, client_ip, email=email)
            user = await repository.find_by_email(connection, email)
        if not await self.hasher.verify(password, user.password_hash if user else None):
            async with self.database.write() as connection:
                await throttle.record_failure(connection, throttle.login_account, email)
                await throttle.record_failure(connection, throttle.login_ip, client_ip)
            LOGINS.labels("bad_credentials").inc()
            logger.info("login failed", extra={"email": email, "client_ip": client_ip})
            raise InvalidCredentials()
        assert user is not None
        # Told only to whoever knows the password.
        if user.disabled_at is not None:
            LOGINS.labels("disabled").inc()
            raise AccountDisabled()
        if self.settings.auth_require_verified_email and user.email_verified_at is None:
            LOGINS.labels("unverified").inc()
            raise EmailNotVerified()
        upgraded = None
        if self.hasher.needs_rehash(user.password_hash):
            upgraded = await self.hasher.hash(password)
        async with self.database.write() as connection:
            await throttle.clear(connection, throttle.login_account, email)
            if upgraded is not None:
                await repository.set_password(connection, user.id, upgraded)
            refresh_token = await refresh_tokens.start_family(connection, user.id, self.lifetimes)
        LOGINS.labels("success").inc()
        TOKENS_ISSUED.labels("password").inc()
        logger.info("login succeeded", extra={"user_id": str(user.id), "client_ip": client_ip})
        return self._pair(user.id, refresh_token, user.email_verified_at is not None)

    async def refresh_grant(self, refresh_token: str, client_ip: str) -> TokenPair:
        # One statement: a read block (autocommit) saves the BEGIN and COMMIT round trips.
        async with self.database.read() as connection:
            outcome = await refresh_tokens.rotate(connection, refresh_token, self.lifetimes)
        if isinstance(outcome, refresh_tokens.Refusal):
            if outcome is refresh_tokens.Refusal.REUSED:
                REFRESH_TOKEN_REUSE.inc()
                logger.warning(
                    "refresh token reused; session revoked", extra={"client_ip": client_ip}
                )
            raise InvalidRefreshToken()
        TOKENS_ISSUED.labels("refresh_token").inc()
        return self._pair(outcome.user_id, outcome.refresh_token, outcome.email_verified)

    async def revoke(self, token: str) -> None:
        """End the session of a refresh token; a token that is not one is ignored (RFC 7009)."""
        async with self.database.read() as connection:
            revoked = await refresh_tokens.revoke(connection, token)
        if revoked:
            logger.info("session revoked")

    async def account(self, user_id: uuid.UUID) -> UserPublic:
        async with self.database.read() as connection:
            user = await repository.find(connection, user_id)
        if user is None or user.disabled_at is not None:
            raise AccountGone()
        return UserPublic.of(user)

    @_hashing
    async def change_password(
        self, user_id: uuid.UUID, current: str, new: str, client_ip: str
    ) -> None:
        """Replace the password and end every session of the account."""
        throttle = self.throttle
        async with self.database.read() as connection:
            user = await repository.find(connection, user_id)
            if user is None or user.disabled_at is not None:
                raise AccountGone()
            if retry_after := await throttle.retry_after(
                connection, [throttle.login_account.key(user.email)]
            ):
                raise _throttled(retry_after, client_ip, email=user.email)
        if not await self.hasher.verify(current, user.password_hash):
            async with self.database.write() as connection:
                await throttle.record_failure(connection, throttle.login_account, user.email)
            logger.info(
                "password change refused", extra={"user_id": str(user.id), "client_ip": client_ip}
            )
            raise WrongCurrentPassword()
        if problem := password_problem(new, email=user.email):
            raise WeakPassword(problem)
        password_hash = await self.hasher.hash(new)
        async with self.database.write() as connection:
            await repository.set_password(connection, user.id, password_hash)
            await refresh_tokens.revoke_all(connection, user.id)
        logger.info("password changed; sessions ended", extra={"user_id": str(user.id)})


def _throttled(retry_after: int, client_ip: str, *, email: str | None = None) -> TooManyAttempts:
    logger.info("throttled", extra={"email": email, "client_ip": client_ip})
    return TooManyAttempts(retry_after)


def _normalize_login(email: str) -> str:
    local, _, domain = email.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if local else email.strip()
