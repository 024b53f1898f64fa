"""MkDocs hook: each service's OpenAPI document, generated from its app at every build.

The API pages link to ``api/auth-openapi.json`` and ``api/tasks-openapi.json``.
They come from ``create_app(...).openapi()``, the very document the running
service serves, so the site can never publish a stale one. Building an app
connects to nothing: only its lifespan does, and it never runs here. Building
auth's reads its signing keys: it gets a throw-away one.
"""

import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from taskstack.auth.config import AuthSettings
from taskstack.auth.keys import generate_signing_key
from taskstack.auth.main import create_app as create_auth_app
from taskstack.tasks.config import TasksSettings
from taskstack.tasks.main import create_app as create_tasks_app

# The apps require a database URL; nothing connects to it.
_UNUSED_DATABASE_URL = "postgresql://docs@127.0.0.1:1/docs"
# Settings read only from the arguments below, whatever the environment of the
# build holds (a prefix no variable carries).
_NO_ENVIRONMENT = "TASKSTACK_DOCUMENTATION_BUILD_"


def _auth_app() -> FastAPI:
    with tempfile.TemporaryDirectory(prefix="taskstack-docs-keys-") as keys:
        generate_signing_key(Path(keys))
        return create_auth_app(
            AuthSettings(
                _env_prefix=_NO_ENVIRONMENT,
                database_url=_UNUSED_DATABASE_URL,
                auth_signing_keys_dir=Path(keys),
            )
        )


def _tasks_app() -> FastAPI:
    return create_tasks_app(
        TasksSettings(
            _env_prefix=_NO_ENVIRONMENT,
            database_url=_UNUSED_DATABASE_URL,
        )
    )


SERVICES: dict[str, Callable[[], FastAPI]] = {"auth": _auth_app, "tasks": _tasks_app}


def document_path(service: str) -> str:
    """Where the service's document is published, relative to the docs directory."""
    return f"api/{service}-openapi.json"


@contextmanager
def _logging_left_as_it_was() -> Iterator[None]:
    # Building an app configures the service's JSON logging on the root logger;
    # MkDocs' own messages must keep going where MkDocs sent them.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def openapi_documents() -> dict[str, dict[str, Any]]:
    with _logging_left_as_it_was():
        return {service: build().openapi() for service, build in SERVICES.items()}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for service, document in openapi_documents().items():
        content = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        files.append(File.generated(config, document_path(service), content=content))
    return files
