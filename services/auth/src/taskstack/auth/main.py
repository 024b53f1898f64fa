"""The auth service's ASGI app: `uvicorn --factory taskstack.auth.main:create_app`."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import anyio
import httpx
from fastapi import FastAPI
from starlette.middleware import Middleware

from taskstack.auth.closure import ACCOUNT_EVENTS, EventPusher
from taskstack.auth.config import AuthSettings
from taskstack.auth.errors import install_oauth_error_handler
from taskstack.auth.gate import SignInGate
from taskstack.auth.keys import KeyConfigurationError, SigningKeys, load_signing_keys
from taskstack.auth.mail import MAIL_OUTBOX, SmtpSender
from taskstack.auth.outbox import Courier, running
from taskstack.auth.passwords import PasswordHasher
from taskstack.auth.routes import router, well_known
from taskstack.auth.service import AuthService
from taskstack.auth.throttle import Throttle
from taskstack.common.app import create_service_app
from taskstack.common.db import Database
from taskstack.common.jwks import StaticKeySet
from taskstack.common.settings import Environment, from_environment
from taskstack.common.tokens import token_verifier

logger = logging.getLogger(__name__)


def mail_courier(database: Database, settings: AuthSettings) -> Courier:
    if settings.smtp_host is None:
        logger.warning("SMTP_HOST is not set: mails are queued, not sent")
    return Courier(
        database,
        MAIL_OUTBOX,
        SmtpSender(settings) if settings.smtp_host else _unsent,
        poll_seconds=settings.outbox_poll_seconds,
        # Past the SMTP timeout, with room for the connection and the greeting.
        lease_seconds=3 * settings.smtp_timeout_seconds,
        retry_base_seconds=settings.outbox_retry_base_seconds,
        retry_max_seconds=settings.outbox_retry_max_seconds,
    )


async def _unsent(_: object) -> None:
    raise RuntimeError("not configured")


EVENT_TIMEOUT_SECONDS = 10.0


def events_courier(
    database: Database, settings: AuthSettings, keys: SigningKeys, client: httpx.AsyncClient
) -> Courier:
    return Courier(
        database,
        ACCOUNT_EVENTS,
        EventPusher(settings, keys, client) if settings.auth_events_url else _unsent,
        poll_seconds=settings.outbox_poll_seconds,
        lease_seconds=3 * EVENT_TIMEOUT_SECONDS,
        retry_base_seconds=settings.outbox_retry_base_seconds,
        retry_max_seconds=settings.outbox_retry_max_seconds,
    )


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or from_environment(AuthSettings, "taskstack-auth")
    keys = _signing_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hasher = await anyio.to_thread.run_sync(
            lambda: PasswordHasher(
                pepper=settings.auth_password_pepper.get_secret_value(),
                cost=settings.auth_bcrypt_cost,
                concurrency=settings.auth_hash_concurrency,
                queue_limit=settings.auth_hash_queue_limit,
                queue_timeout=settings.auth_hash_queue_timeout_seconds,
            )
        )
        database = app.state.database
        mail = mail_courier(database, settings)
        client = httpx.AsyncClient(timeout=EVENT_TIMEOUT_SECONDS, trust_env=False)
        events = events_courier(database, settings, keys, client)
        app.state.auth = AuthService(
            database, settings, keys, hasher, Throttle(settings), mail.wake, events.wake
        )
        app.state.token_verifier = token_verifier(settings, StaticKeySet(keys.public_keys))
        couriers = [mail] if settings.smtp_host else []
        if settings.auth_events_url:
            couriers.append(events)
        else:
            logger.warning("AUTH_EVENTS_URL is not set: account events are kept, not delivered")
        try:
            async with running(couriers):
                yield
        finally:
            await client.aclose()
            hasher.close()

    app = create_service_app(
        name="auth",
        version=version("taskstack-auth"),
        settings=settings,
        routers=[router, well_known],
        public_prefix="/v1/auth",
        lifespan=lifespan,
        middleware=[Middleware(SignInGate)],
    )
    install_oauth_error_handler(app)
    return app


def _signing_keys(settings: AuthSettings) -> SigningKeys:
    """The signing keys, or an exit with one line: read here rather than in the lifespan,
    where uvicorn would print a refused key's error as a traceback."""
    try:
        return load_signing_keys(
            settings.auth_signing_keys_dir,
            settings.auth_signing_key_id,
            production=settings.environment is Environment.PRODUCTION,
        )
    except KeyConfigurationError as exc:
        raise SystemExit(f"taskstack-auth: {exc}") from None
