"""The tasks service's ASGI app: `uvicorn --factory taskstack.tasks.main:create_app`."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib.metadata import version

import httpx
from fastapi import FastAPI

from taskstack.common.app import create_service_app
from taskstack.common.telemetry import instrument_client
from taskstack.common.tokens import RemoteKeySet, TokenVerifier
from taskstack.tasks.config import TasksSettings
from taskstack.tasks.cursor import CursorCodec
from taskstack.tasks.dependencies import TasksContext
from taskstack.tasks.routes import router

JWKS_FETCH_TIMEOUT = 5.0


class TokenKeys:
    """auth's public keys: fetched by the app's lifespan, then kept fresh in the background."""

    def __init__(self, settings: TasksSettings):
        self.settings = settings
        self.key_set: RemoteKeySet | None = None

    async def loaded(self) -> bool:
        return self.key_set is not None and self.key_set.loaded

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        settings = self.settings
        async with httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT) as client:
            instrument_client(client)  # the fetch is traced and carries traceparent
            keys = RemoteKeySet(
                settings.jwks_url,
                client=client,
                ttl=settings.jwks_cache_seconds,
                cooldown=settings.jwks_refetch_cooldown_seconds,
            )
            self.key_set = keys
            # A failed first fetch is not fatal: readiness stays false and the
            # refresh loop keeps trying (auth may be starting at the same time).
            await keys.refresh()
            app.state.token_verifier = TokenVerifier(
                keys,
                issuer=settings.token_issuer,
                audience=settings.token_audience,
                leeway=settings.token_leeway_seconds,
                cache_size=settings.token_cache_size,
            )
            refresher = asyncio.create_task(keys.run(), name="jwks-refresh")
            try:
                yield
            finally:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher


def create_app(settings: TasksSettings | None = None) -> FastAPI:
    settings = settings or TasksSettings()
    keys = TokenKeys(settings)
    app = create_service_app(
        name="tasks",
        version=version("taskstack-tasks"),
        settings=settings,
        routers=[router],
        public_prefix="/v1/tasks",
        description="Each user's tasks. Every operation needs an access token from auth.",
        readiness_checks={"jwks": keys.loaded},
        lifespan=keys.lifespan,
    )
    app.state.tasks = TasksContext(
        cursor_codec=CursorCodec(settings.tasks_cursor_secret.get_secret_value().encode()),
        idempotency_retention=timedelta(hours=settings.tasks_idempotency_hours),
    )
    return app
