"""create_service_app(): the wiring every taskstack service shares."""

import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, params
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from taskstack.common.admission import Admission
from taskstack.common.db import Database
from taskstack.common.docs import install_docs
from taskstack.common.errors import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    UnsupportedMediaType,
    install_error_handlers,
)
from taskstack.common.health import ReadinessCheck, health_router
from taskstack.common.logging import configure_logging
from taskstack.common.metrics import BUILD_INFO, metrics_router
from taskstack.common.middleware import HeadMiddleware, RequestHandling
from taskstack.common.settings import ServiceSettings
from taskstack.common.telemetry import instrument_app, tracer_provider

logger = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

TRANSIENT_RETRY_ATTEMPTS = 3


def create_service_app(
    *,
    name: str,
    version: str,
    settings: ServiceSettings,
    routers: Sequence[APIRouter],
    public_prefix: str,
    description: str = "",
    readiness_checks: Mapping[str, ReadinessCheck] | None = None,
    lifespan: Lifespan | None = None,
    middleware: Sequence[Middleware] = (),
) -> FastAPI:
    """Build a service: its routers under ``public_prefix``, docs, health, errors, middleware.

    Nothing here connects or starts anything; the returned app's lifespan does,
    when a server runs it. ``middleware`` runs innermost, after the shared
    middleware (request id, metrics, body limit) and before routing.
    """
    configure_logging(name, settings.log_level)
    database = Database(settings, service=name)
    BUILD_INFO.labels(name, version).set(1)

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.open()
        try:
            async with (lifespan or _no_lifespan)(app):
                logger.info("started", extra={"version": version})
                # What start-up built (modules, routes, models, pools) lives as long as
                # the process: out of the collector's sight, a full collection walks
                # only what requests allocate, and its pauses stop showing in p99.
                gc.freeze()
                yield
        finally:
            await database.close()

    app = FastAPI(
        title=f"taskstack {name}",
        version=version,
        description=description,
        lifespan=app_lifespan,
        openapi_url=f"{public_prefix}/openapi.json",
        docs_url=None,  # install_docs serves it, without a CDN
        redoc_url=None,
        dependencies=[Depends(_require_supported_media_type)],
        # Traced by OpenTelemetry's FastAPI instrumentation below, not twice.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = name
    app.state.database = database
    admission = Admission.from_settings(name, settings)
    app.state.admission = admission
    install_error_handlers(app)
    install_docs(app, public_prefix)
    checks = {"database": database.ping, **(readiness_checks or {})}
    app.include_router(health_router(name, checks, settings.readiness_timeout))
    app.include_router(metrics_router())
    for router in routers:
        app.include_router(router)
    app.openapi = _problem_documenting_openapi(app)  # type: ignore[method-assign]

    # add_middleware wraps: the last added runs first.
    for inner in reversed(middleware):
        app.add_middleware(inner.cls, *inner.args, **inner.kwargs)
    app.add_middleware(HeadMiddleware)
    app.add_middleware(
        RequestHandling,
        service=name,
        access_log=settings.access_log,
        max_body_bytes=settings.max_body_bytes,
        attempts=TRANSIENT_RETRY_ATTEMPTS,
        budget=settings.database_pool_timeout,
    )
    if settings.cors_allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allowed_origins,
            allow_credentials=False,  # bearer tokens, never cookies
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "If-Match",
                "If-None-Match",
                "Idempotency-Key",
                "X-Request-ID",
            ],
            expose_headers=[
                "ETag",
                "Location",
                "Link",
                "Retry-After",
                "RateLimit",
                "RateLimit-Policy",
                "X-Request-ID",
                "Idempotent-Replayed",
            ],
            max_age=600,
        )
    # Outermost: a refusal costs no request id, no body and no routing.
    app.add_middleware(admission.wrap)
    if provider := tracer_provider(name, version):
        instrument_app(app, database, provider)
    return app


def _no_lifespan(_: FastAPI) -> AbstractAsyncContextManager[None]:
    return nullcontext()


_FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _require_supported_media_type(request: Request) -> None:
    """415 for a body whose media type the route does not read.

    FastAPI would otherwise hand such a body to validation as raw bytes (422),
    which hides what is wrong.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return
    headers = request.headers
    if "content-length" not in headers and "transfer-encoding" not in headers:
        return
    if headers.get("content-length") == "0":
        return
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if isinstance(route.body_field.field_info, params.Form):
        accepted = media_type in _FORM_MEDIA_TYPES
        expected = " or ".join(_FORM_MEDIA_TYPES)
    else:
        accepted = media_type == "application/json" or (
            media_type.startswith("application/") and media_type.endswith("+json")
        )
        expected = "application/json"
    if not accepted:
        raise UnsupportedMediaType(f"Send the body as {expected}.")


def _problem_documenting_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """Document, on every operation, the problem+json answers it can give."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(problem.pop("$defs", {}), Problem=problem)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                _document_problems(operation)
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    return openapi


_PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}
_CHALLENGE = {
    "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer challenge."}
}


def _document_problems(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    has_body = "requestBody" in operation
    statuses: dict[str, str] = {}
    if operation.get("security"):
        statuses["401"] = "The access token is missing, invalid or expired; see `WWW-Authenticate`."
    if has_body:
        statuses["400"] = "The body could not be read (not UTF-8, or nested too deeply)."
        statuses["413"] = "The body is too large."
        statuses["415"] = "The body is not in a media type this operation reads."
    if has_body or operation.get("parameters"):
        statuses["422"] = "The request is not valid; `errors` lists each problem."
    statuses["500"] = "An unexpected error; the body carries only a request id."
    statuses["503"] = "The database is unavailable or busy; retry after `Retry-After`."
    for status, description in statuses.items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        # A route may document another error format (the OAuth token endpoint
        # does); everything else is problem+json.
        if status[0] in "45" and _is_problem(response.get("content")):
            response["content"] = _PROBLEM_CONTENT
            if status in ("429", "503"):
                # A route may document more headers (a rate limit's); Retry-After is always one.
                response["headers"] = {**_RETRY_AFTER, **response.get("headers", {})}
            elif status == "401":
                response["headers"] = _CHALLENGE


def _is_problem(content: dict[str, Any] | None) -> bool:
    if not content:
        return True
    refs = {media.get("schema", {}).get("$ref", "") for media in content.values()}
    return all(ref.rsplit("/", 1)[-1] in ("Problem", "HTTPValidationError") for ref in refs)
