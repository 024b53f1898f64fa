"""The auth service's ASGI app: `uvicorn --factory taskstack.auth.main:create_app`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

import anyio
from fastapi import FastAPI
from starlette.middleware import Middleware

from taskstack.auth.config import AuthSettings
from taskstack.auth.errors import install_oauth_error_handler
from taskstack.auth.gate import SignInGate
from taskstack.auth.keys import KeyConfigurationError, SigningKeys, load_signing_keys
from taskstack.auth.passwords import PasswordHasher
from taskstack.auth.routes import router, well_known
from taskstack.auth.service import AuthService
from taskstack.auth.throttle import Throttle
from taskstack.common.app import create_service_app
from taskstack.common.jwks import StaticKeySet
from taskstack.common.settings import Environment, from_environment
from taskstack.common.tokens import token_verifier


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
        app.state.auth = AuthService(app.state.database, settings, keys, hasher, Throttle(settings))
        app.state.token_verifier = token_verifier(settings, StaticKeySet(keys.public_keys))
        try:
            yield
        finally:
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
