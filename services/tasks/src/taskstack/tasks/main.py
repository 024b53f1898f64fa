"""The tasks service's ASGI app: `uvicorn --factory taskstack.tasks.main:create_app`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import version

from fastapi import FastAPI
from starlette.middleware import Middleware

from taskstack.common.app import create_service_app
from taskstack.common.jwks import RemoteKeySet, remote_jwks
from taskstack.common.settings import from_environment
from taskstack.common.tokens import internal_token_verifier, token_verifier
from taskstack.tasks.accounts import DenyList
from taskstack.tasks.config import TasksSettings
from taskstack.tasks.cursor import CursorCodec
from taskstack.tasks.front import TaskFront
from taskstack.tasks.internal import internal
from taskstack.tasks.models import API_PREFIX
from taskstack.tasks.ratelimit import RateLimit
from taskstack.tasks.routes import router
from taskstack.tasks.service import TaskService


def create_app(settings: TasksSettings | None = None) -> FastAPI:
    settings = settings or from_environment(TasksSettings, "taskstack-tasks")
    jwks: RemoteKeySet | None = None

    async def jwks_loaded() -> bool:
        # Not ready until auth's keys are in: until then every token would be refused.
        return jwks is not None and jwks.loaded

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal jwks
        deny_list = DenyList(app.state.database)
        app.state.tasks = TaskService(
            app.state.database,
            CursorCodec(settings.tasks_cursor_secret.get_secret_value().encode()),
            timedelta(hours=settings.tasks_idempotency_hours),
            settings.tasks_max_tasks_per_user,
            deny_list,
        )
        app.state.rate_limit = RateLimit(
            app.state.database,
            limit=settings.tasks_rate_limit_per_minute,
            sync_seconds=settings.tasks_rate_limit_sync_seconds,
        )
        async with (
            app.state.rate_limit.sharing(),
            remote_jwks(
                settings.jwks_url,
                ttl=settings.jwks_cache_seconds,
                cooldown=settings.jwks_refetch_cooldown_seconds,
            ) as jwks,
            deny_list.kept_current(),
        ):
            app.state.token_verifier = token_verifier(settings, jwks, denied=deny_list)
            app.state.internal_token_verifier = internal_token_verifier(settings, jwks)
            yield

    return create_service_app(
        name="tasks",
        version=version("taskstack-tasks"),
        settings=settings,
        routers=[router, internal],
        public_prefix=API_PREFIX,
        description="Each user's tasks. Every operation needs an access token from auth.",
        readiness_checks={"jwks": jwks_loaded},
        lifespan=lifespan,
        middleware=[Middleware(TaskFront)] if settings.tasks_front else [],
    )
