"""The auth service's routes: /v1/auth/* and the /.well-known discovery documents."""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse

from taskstack.auth.dependencies import AuthDep, ClientIP, CurrentUser
from taskstack.auth.models import OAuthError, PasswordChange, Registration, TokenPair, UserPublic
from taskstack.auth.service import Grant
from taskstack.common.db import DatabaseDep, SessionDep
from taskstack.common.errors import AppError, Problem
from taskstack.common.tokens import TOKEN_PATH, CurrentToken

router = APIRouter(prefix="/v1/auth", tags=["auth"])
well_known = APIRouter(prefix="/.well-known", tags=["discovery"])

# Token answers carry credentials: never cached (RFC 6749 §5.1).
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {"model": Problem, "description": "Too many attempts; see `Retry-After`."}
}


# OpenAPI links: what a client does next with an answer (register, sign in,
# refresh, sign out). Schemathesis' stateful phase follows them too.
_TOKEN_OPERATION = "#/paths/~1v1~1auth~1token/post"
_SIGN_IN_LINK = {
    "operationRef": _TOKEN_OPERATION,
    "description": "Sign in as the new account.",
    "requestBody": {
        "grant_type": "password",
        "username": "$response.body#/email",
        "password": "$request.body#/password",
    },
}
_SESSION_LINKS = {
    "Refresh": {
        "operationRef": _TOKEN_OPERATION,
        "description": "Trade the refresh token for a new pair.",
        "requestBody": {
            "grant_type": "refresh_token",
            "refresh_token": "$response.body#/refresh_token",
        },
    },
    "SignOut": {
        "operationRef": "#/paths/~1v1~1auth~1revoke/post",
        "description": "Revoke the refresh token.",
        "requestBody": {"token": "$response.body#/refresh_token"},
    },
}


@router.post(
    "/register",
    status_code=201,
    response_model=UserPublic,
    responses={
        201: {"links": {"SignIn": _SIGN_IN_LINK}},
        409: {"model": Problem, "description": "The e-mail address is taken."},
        **_THROTTLED,
    },
)
async def register(
    body: Registration, database: DatabaseDep, auth: AuthDep, client_ip: ClientIP
) -> UserPublic | Response:
    user = await auth.register(database.session, body, client_ip)
    if isinstance(user, AppError):
        return user.response()
    return UserPublic.model_validate(user, from_attributes=True)


def _oauth_error(error: str, description: str) -> JSONResponse:
    body = OAuthError(error=error, error_description=description)
    return JSONResponse(body.model_dump(), status_code=400, headers=_NO_STORE)


def _token_answer(result: TokenPair | Grant) -> JSONResponse:
    if isinstance(result, Grant):
        return _oauth_error(result.error, result.description)
    return JSONResponse(result.model_dump(), headers=_NO_STORE)


_FORM = "application/x-www-form-urlencoded"
_GRANT_TYPES = ["password", "refresh_token"]


def _form_requires(**properties: dict[str, Any]) -> dict[str, Any]:
    """openapi_extra that documents form fields as required.

    The handler reads them as optional so that a missing one gets the OAuth
    error answer (400 invalid_request), not the generic 422 problem.
    """
    schema = {"required": list(properties), "properties": properties}
    return {"requestBody": {"required": True, "content": {_FORM: {"schema": schema}}}}


@router.post(
    "/token",
    response_model=TokenPair,
    responses={
        200: {"links": _SESSION_LINKS},
        400: {"model": OAuthError, "description": "RFC 6749 §5.2 error."},
        **_THROTTLED,
    },
    summary="OAuth 2.0 token endpoint (password and refresh_token grants)",
    openapi_extra=_form_requires(grant_type={"type": "string", "enum": _GRANT_TYPES}),
)
async def token(
    request: Request,
    database: DatabaseDep,
    auth: AuthDep,
    client_ip: ClientIP,
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    refresh_token: Annotated[str | None, Form()] = None,
) -> Response:
    form = await request.form()
    if repeated := sorted({name for name in form if len(form.getlist(name)) > 1}):
        return _oauth_error("invalid_request", f"Repeated parameter: {', '.join(repeated)}.")
    if grant_type == "password":
        if not username or password is None:
            return _oauth_error("invalid_request", "username and password are required.")
        return _token_answer(
            await auth.password_grant(database.session, username, password, client_ip)
        )
    if grant_type == "refresh_token":
        if not refresh_token:
            return _oauth_error("invalid_request", "refresh_token is required.")
        # One statement: autocommit saves the BEGIN and COMMIT round trips.
        async with database.connection(autocommit=True) as connection:
            answer = await auth.refresh_grant(connection, refresh_token, client_ip)
        return _token_answer(answer)
    if grant_type is None:
        return _oauth_error("invalid_request", "grant_type is required.")
    return _oauth_error("unsupported_grant_type", "Use grant_type password or refresh_token.")


@router.post(
    "/revoke",
    response_class=Response,
    responses={
        200: {"description": "Revoked, or it was not a valid token (RFC 7009 §2.2)."},
        400: {"model": OAuthError, "description": "No token was given."},
    },
    summary="RFC 7009 revocation of a refresh token (sign out)",
    openapi_extra=_form_requires(token={"type": "string", "minLength": 1}),
)
async def revoke(
    session: SessionDep,
    auth: AuthDep,
    token: Annotated[str | None, Form()] = None,
    token_type_hint: Annotated[str | None, Form()] = None,
) -> Response:
    if not token:
        return _oauth_error("invalid_request", "token is required.")
    # Answered alike whether or not the token was valid (RFC 7009 §2.2).
    await auth.revoke(session, token)
    return Response(status_code=200, headers=_NO_STORE)


@router.get("/me", response_model=UserPublic)
async def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user, from_attributes=True)


@router.post(
    "/password",
    status_code=204,
    responses={
        400: {"model": Problem, "description": "The current password is wrong."},
        **_THROTTLED,
    },
)
async def change_password(
    body: PasswordChange,
    token: CurrentToken,
    database: DatabaseDep,
    auth: AuthDep,
    client_ip: ClientIP,
) -> Response:
    refused = await auth.change_password(
        database.session, token.subject, body.current_password, body.new_password, client_ip
    )
    return refused.response() if refused else Response(status_code=204)


@well_known.get("/jwks.json", summary="The public keys that verify access tokens")
async def jwks(auth: AuthDep) -> JSONResponse:
    max_age = auth.settings.auth_jwks_max_age_seconds
    return JSONResponse(auth.keys.jwks(), headers={"Cache-Control": f"public, max-age={max_age}"})


@well_known.get("/oauth-authorization-server", summary="RFC 8414 authorization server metadata")
async def metadata(auth: AuthDep) -> JSONResponse:
    issuer = auth.settings.token_issuer
    base = issuer.rstrip("/")
    document = {
        "issuer": issuer,
        "token_endpoint": base + TOKEN_PATH,
        "jwks_uri": base + "/.well-known/jwks.json",
        "revocation_endpoint": base + "/v1/auth/revoke",
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
    }
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=3600"})
