"""The auth service's ASGI app: `uvicorn --factory taskstack.auth.main:create_app`."""

from importlib.metadata import version

from fastapi import FastAPI

from taskstack.auth.config import AuthSettings
from taskstack.auth.routes import router
from taskstack.common.app import create_service_app


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    return create_service_app(
        name="auth",
        version=version("taskstack-auth"),
        settings=settings or AuthSettings(),
        routers=[router],
        public_prefix="/v1/auth",
    )
