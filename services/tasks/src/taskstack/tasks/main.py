"""The tasks service's ASGI app: `uvicorn --factory taskstack.tasks.main:create_app`."""

from importlib.metadata import version

from fastapi import FastAPI

from taskstack.common.app import create_service_app
from taskstack.tasks.config import TasksSettings
from taskstack.tasks.routes import router


def create_app(settings: TasksSettings | None = None) -> FastAPI:
    return create_service_app(
        name="tasks",
        version=version("taskstack-tasks"),
        settings=settings or TasksSettings(),
        routers=[router],
        public_prefix="/v1/tasks",
    )
