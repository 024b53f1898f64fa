"""Every error the auth service answers with, each carrying its status.

The token endpoint speaks OAuth 2.0: its errors (``OAuthError``) are answered
in RFC 6749 §5.2's format by their own handler; everything else is
problem+json like every taskstack error.
"""

from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from taskstack.common.errors import (
    AppError,
    BadRequest,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableContent,
)

# Token answers carry credentials: never cached (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(AppError):
    """An error of the token or revocation endpoint (RFC 6749 §5.2, RFC 7009 §2.2.1)."""

    status_code = 400
    error: ClassVar[str]


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidCredentials(InvalidGrant):
    # An unknown e-mail and a wrong password look alike, in answer and in time.
    default_detail = "The e-mail address or password is not correct."


class InvalidRefreshToken(InvalidGrant):
    default_detail = "The refresh token is not valid."


class EmailNotVerified(InvalidGrant):
    default_detail = "Verify your e-mail address first: follow the link in the mail we sent."


class AccountDisabled(InvalidGrant):
    default_detail = "This account is disabled."


class InvalidLink(BadRequest):
    default_detail = "The link is invalid, already used or expired; ask for a new one."


class WeakPassword(UnprocessableContent):
    """A new password the policy refuses; the detail says why."""


class WrongCurrentPassword(BadRequest):
    default_detail = "The current password is not correct."


class AccountGone(Unauthorized):
    default_detail = "The access token's account no longer exists."


class TooManyAttempts(TooManyRequests):
    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many attempts; try again later.", retry_after=retry_after)


class HashingOverloaded(ServiceUnavailable):
    default_detail = "Too many sign-ins at once; try again shortly."


async def _oauth_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, OAuthError)
    body = {"error": exc.error, "error_description": exc.detail}
    return JSONResponse(body, status_code=exc.status_code, headers=NO_STORE)


def install_oauth_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(OAuthError, _oauth_error)
