"""Errors that carry their HTTP status, rendered as RFC 9457 problem+json.

Services raise; they never return an error. Each service keeps its own error
types in its ``errors.py``, subclasses of the ones here, so a reader finds
every answer a service can give in one place.
"""

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from taskstack.common.logging import request_id_var

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem details document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class AppError(Exception):
    """Base of every error a service raises on purpose; subclasses set the status, and may
    set the detail every instance carries unless given another."""

    status_code: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR
    default_detail: ClassVar[str | None] = None

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None):
        detail = detail or self.default_detail
        super().__init__(detail or HTTPStatus(self.status_code).phrase)
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """The problem answer (the handler's, and a gate's that answers before routing)."""
        return problem_response(self.status_code, self.detail, headers=self.headers)


class BadRequest(AppError):
    status_code = HTTPStatus.BAD_REQUEST


class Unauthorized(AppError):
    """A missing, invalid or expired access token (RFC 6750 §3: a Bearer challenge)."""

    status_code = HTTPStatus.UNAUTHORIZED

    def __init__(self, detail: str | None = None, *, error: str | None = "invalid_token"):
        challenge = 'Bearer realm="taskstack"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(AppError):
    status_code = HTTPStatus.FORBIDDEN


class NotFound(AppError):
    status_code = HTTPStatus.NOT_FOUND


class Conflict(AppError):
    status_code = HTTPStatus.CONFLICT


class PreconditionFailed(AppError):
    status_code = HTTPStatus.PRECONDITION_FAILED


class ContentTooLarge(AppError):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class UnsupportedMediaType(AppError):
    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class UnprocessableContent(AppError):
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY


class _RetryLater(AppError):
    def __init__(self, detail: str | None = None, *, retry_after: int = 1):
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class TooManyRequests(_RetryLater):
    status_code = HTTPStatus.TOO_MANY_REQUESTS


class ServiceUnavailable(_RetryLater):
    status_code = HTTPStatus.SERVICE_UNAVAILABLE


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[FieldError] | None = None,
) -> Response:
    problem = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        request_id=request_id_var.get(),
        errors=list(errors) if errors is not None else None,
    )
    return Response(
        problem.model_dump_json(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


async def _app_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return exc.response()


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = None if exc.detail == HTTPStatus(exc.status_code).phrase else exc.detail
    headers = dict(exc.headers or {})
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    return problem_response(exc.status_code, detail, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path, HEAD wherever GET is served.

    Starlette's own Allow names only the first route whose path matched, but
    FastAPI makes one route per method (GET and DELETE /items are two routes).
    Asking the router about each method also sees into included routers.
    HeadMiddleware answers HEAD on every GET route.
    """
    served = {
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    }
    if "GET" in served:
        served.add("HEAD")
    return [method for method in _METHODS if method in served]


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Never echo the rejected input: it may be a password or a token.
    errors = [_field_error(error) for error in exc.errors()]
    return problem_response(
        HTTPStatus.UNPROCESSABLE_ENTITY, "The request is not valid.", errors=errors
    )


def _field_error(error: Mapping[str, Any]) -> FieldError:
    loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
    return FieldError(loc=loc, msg=str(error.get("msg", "")), type=str(error.get("type", "")))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
