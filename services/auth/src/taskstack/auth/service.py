"""What the auth service does: register, sign in, refresh, revoke, change passwords.

No FastAPI here. The outcomes that must still commit (a failed login is
counted even though the answer is an error) are returned, not raised: a
raised error rolls the request's transaction back. Flows that hash a password
open their own short transactions around the hash (see ``Sessions``).
"""

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from taskstack.auth import refresh_tokens
from taskstack.auth.config import AuthSettings
from taskstack.auth.keys import SigningKeys
from taskstack.auth.metrics import LOGINS, REFRESH_TOKEN_REUSE, REGISTRATIONS, TOKENS_ISSUED
from taskstack.auth.models import MAX_EMAIL_LENGTH, Registration, TokenPair, User
from taskstack.auth.passwords import PasswordHasher, password_problem
from taskstack.auth.throttle import Throttle, storable_text
from taskstack.common.errors import BadRequest, Conflict, TooManyRequests, UnprocessableContent
from taskstack.common.models import utc_now
from taskstack.common.tokens import Unauthorized

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    """An OAuth error answer of the token endpoint (RFC 6749 §5.2)."""

    error: str
    description: str


# Opens a short transaction (``Database.session``): the flows that hash a
# password open one before and one after, never across the hash.
Sessions = Callable[[], AbstractAsyncContextManager[AsyncSession]]

INVALID_CREDENTIALS = Grant("invalid_grant", "The e-mail address or password is not correct.")
INVALID_REFRESH_TOKEN = Grant("invalid_grant", "The refresh token is not valid.")


P = ParamSpec("P")
R = TypeVar("R")


def _hashing(
    flow: Callable[Concatenate["Auth", P], Awaitable[R]],
) -> Callable[Concatenate["Auth", P], Awaitable[R]]:
    """Run a flow that hashes a password inside the hasher's admission, from its first
    step: past the hashing bound it is refused before it touches the database."""

    @functools.wraps(flow)
    async def admitted(auth: "Auth", /, *args: P.args, **kwargs: P.kwargs) -> R:
        with auth.hasher.admission():
            return await flow(auth, *args, **kwargs)

    return admitted


@dataclass
class Auth:
    """The auth service's collaborators, built once per process."""

    settings: AuthSettings
    keys: SigningKeys
    hasher: PasswordHasher
    throttle: Throttle

    @property
    def lifetimes(self) -> refresh_tokens.Lifetimes:
        return refresh_tokens.Lifetimes(
            absolute=timedelta(seconds=self.settings.auth_refresh_token_absolute_seconds),
            idle=timedelta(seconds=self.settings.auth_refresh_token_idle_seconds),
        )

    def _access_token(self, user_id: uuid.UUID) -> str:
        return self.keys.issue_access_token(
            user_id,
            issuer=self.settings.token_issuer,
            audience=self.settings.token_audience,
            lifetime=self.settings.auth_access_token_seconds,
        )

    def _pair(self, user_id: uuid.UUID, refresh_token: str) -> TokenPair:
        return TokenPair(
            access_token=self._access_token(user_id),
            expires_in=self.settings.auth_access_token_seconds,
            refresh_token=refresh_token,
        )

    @_hashing
    async def register(
        self, sessions: Sessions, request: Registration, client_ip: str
    ) -> User | Conflict:
        if problem := password_problem(request.password, email=request.email):
            raise UnprocessableContent(problem)
        # Every attempt counts, a taken e-mail included (so registration cannot
        # be used to test addresses faster than the limit allows). Committed
        # before hashing: no connection is held while bcrypt runs.
        async with sessions() as session:
            if retry_after := await self.throttle.retry_after(
                session, [self.throttle.register_ip.key(client_ip)]
            ):
                REGISTRATIONS.labels("throttled").inc()
                raise _throttled(retry_after, client_ip)
            await self.throttle.record_failure(session, self.throttle.register_ip, client_ip)
            taken = await find_user_by_email(session, request.email) is not None
        if taken:
            REGISTRATIONS.labels("conflict").inc()
            return Conflict("An account with this e-mail address exists.")
        user = User(email=request.email, password_hash=await self.hasher.hash(request.password))
        async with sessions() as session:
            session.add(user)
            try:
                await session.flush()
            except IntegrityError:
                raise Conflict("An account with this e-mail address exists.") from None
        REGISTRATIONS.labels("created").inc()
        logger.info("account registered", extra={"user_id": str(user.id), "client_ip": client_ip})
        return user

    @_hashing
    async def password_grant(
        self, sessions: Sessions, email: str, password: str, client_ip: str
    ) -> TokenPair | Grant:
        """Sign in. Unknown e-mail and wrong password look alike, in answer and in time.

        Read, hash, write: the account is read in one short transaction and the
        outcome written in another, so a storm of sign-ins never holds the
        connections that refreshes need while bcrypt runs.
        """
        email = _normalize_login(email)
        throttle = self.throttle
        async with sessions() as session:
            if retry_after := await throttle.retry_after(
                session, [throttle.login_account.key(email), throttle.login_ip.key(client_ip)]
            ):
                LOGINS.labels("throttled").inc()
                raise _throttled(retry_after, client_ip, email=email)
            user = await find_user_by_email(session, email)
        if not await self.hasher.verify(password, user.password_hash if user else None):
            async with sessions() as session:
                await throttle.record_failure(session, throttle.login_account, email)
                await throttle.record_failure(session, throttle.login_ip, client_ip)
            LOGINS.labels("bad_credentials").inc()
            logger.info("login failed", extra={"email": email, "client_ip": client_ip})
            return INVALID_CREDENTIALS
        assert user is not None
        upgraded = None
        if self.hasher.needs_rehash(user.password_hash):
            upgraded = await self.hasher.hash(password)
        async with sessions() as session:
            await throttle.clear(session, throttle.login_account, email)
            if upgraded is not None:
                await session.exec(
                    update(User)
                    .where(col(User.id) == user.id)
                    .values(password_hash=upgraded, updated_at=utc_now())
                )
            refresh_token = await refresh_tokens.start_family(session, user.id, self.lifetimes)
        LOGINS.labels("success").inc()
        TOKENS_ISSUED.labels("password").inc()
        logger.info("login succeeded", extra={"user_id": str(user.id), "client_ip": client_ip})
        return self._pair(user.id, refresh_token)

    async def refresh_grant(
        self, connection: AsyncConnection, refresh_token: str, client_ip: str
    ) -> TokenPair | Grant:
        outcome = await refresh_tokens.rotate(connection, refresh_token, self.lifetimes)
        if isinstance(outcome, refresh_tokens.Refusal):
            if outcome is refresh_tokens.Refusal.REUSED:
                REFRESH_TOKEN_REUSE.inc()
                logger.warning(
                    "refresh token reused; session revoked", extra={"client_ip": client_ip}
                )
            return INVALID_REFRESH_TOKEN
        TOKENS_ISSUED.labels("refresh_token").inc()
        return self._pair(outcome.user_id, outcome.refresh_token)

    async def revoke(self, session: AsyncSession, token: str) -> None:
        if await refresh_tokens.revoke(session, token):
            logger.info("session revoked")

    @_hashing
    async def change_password(
        self, sessions: Sessions, user_id: uuid.UUID, current: str, new: str, client_ip: str
    ) -> BadRequest | None:
        """Replace the password and end every session; or say why the current one is refused.

        Like sign-in, no connection is held while a password is hashed.
        """
        throttle = self.throttle
        async with sessions() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise Unauthorized("The access token's account no longer exists.")
            if retry_after := await throttle.retry_after(
                session, [throttle.login_account.key(user.email)]
            ):
                raise _throttled(retry_after, client_ip, email=user.email)
        if not await self.hasher.verify(current, user.password_hash):
            async with sessions() as session:
                await throttle.record_failure(session, throttle.login_account, user.email)
            logger.info(
                "password change refused", extra={"user_id": str(user.id), "client_ip": client_ip}
            )
            return BadRequest("The current password is not correct.")
        if problem := password_problem(new, email=user.email):
            raise UnprocessableContent(problem)
        password_hash = await self.hasher.hash(new)
        async with sessions() as session:
            await session.exec(
                update(User)
                .where(col(User.id) == user.id)
                .values(
                    password_hash=password_hash,
                    version=col(User.version) + 1,
                    updated_at=utc_now(),
                )
            )
            await refresh_tokens.revoke_all(session, user.id)
        logger.info("password changed; sessions ended", extra={"user_id": str(user.id)})
        return None


def _throttled(retry_after: int, client_ip: str, *, email: str | None = None) -> TooManyRequests:
    logger.info("throttled", extra={"email": email, "client_ip": client_ip})
    return TooManyRequests("Too many attempts; try again later.", retry_after=retry_after)


def _normalize_login(email: str) -> str:
    local, _, domain = email.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if local else email.strip()


async def find_user_by_email(session: AsyncSession, email: str) -> User | None:
    if len(email) > MAX_EMAIL_LENGTH or not storable_text(email):
        return None  # no account has such an address, and PostgreSQL could not compare it
    statement = select(User).where(func.lower(User.email) == email.lower())
    return (await session.exec(statement)).first()
