"""The auth service's routes: /v1/auth/* and the /.well-known discovery documents."""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import JSONResponse

from taskstack.auth.dependencies import AuthServiceDep, ClientIP
from taskstack.auth.errors import NO_STORE, InvalidRequest, UnsupportedGrantType
from taskstack.auth.models import (
    AccountDeletion,
    AddressRequest,
    LinkToken,
    MailRequested,
    OAuthErrorAnswer,
    PasswordChange,
    PasswordReset,
    Registration,
    RegistrationAccepted,
    TokenPair,
    UserPublic,
)
from taskstack.common.errors import Problem
from taskstack.common.tokens import TOKEN_PATH, CurrentToken

router = APIRouter(prefix="/v1/auth", tags=["auth"])
well_known = APIRouter(prefix="/.well-known", tags=["discovery"])
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
    status_code=202,
    response_model=RegistrationAccepted,
    responses={202: {"links": {"SignIn": _SIGN_IN_LINK}}, **_THROTTLED},
    summary="Register; a mail says what next (the answer is the same for a taken address)",
)
async def register(
    body: Registration, auth: AuthServiceDep, client_ip: ClientIP
) -> RegistrationAccepted:
    return await auth.register(body, client_ip)


_MAIL_SENT = "Accepted: the answer is the same whether or not the address has an account."
_BAD_LINK: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The link is invalid, used or expired."}
}


@router.post("/verify-email", status_code=204, responses=_BAD_LINK)
async def verify_email(body: LinkToken, auth: AuthServiceDep) -> Response:
    await auth.recovery.verify_email(body.token)
    return Response(status_code=204)


@router.post(
    "/verify-email/resend",
    status_code=202,
    response_model=MailRequested,
    responses={202: {"description": _MAIL_SENT}, **_THROTTLED},
)
async def resend_verification(
    body: AddressRequest, auth: AuthServiceDep, client_ip: ClientIP
) -> MailRequested:
    await auth.recovery.resend_verification(body.email, client_ip)
    return MailRequested()


@router.post(
    "/password-reset",
    status_code=202,
    response_model=MailRequested,
    responses={202: {"description": _MAIL_SENT}, **_THROTTLED},
)
async def request_password_reset(
    body: AddressRequest, auth: AuthServiceDep, client_ip: ClientIP
) -> MailRequested:
    await auth.recovery.request_reset(body.email, client_ip)
    return MailRequested()


@router.post(
    "/password-reset/confirm",
    status_code=204,
    responses={**_BAD_LINK, 422: {"model": Problem, "description": "The password is refused."}},
    summary="Set a new password with a reset link's token; ends every session",
)
async def confirm_password_reset(body: PasswordReset, auth: AuthServiceDep) -> Response:
    await auth.recovery.confirm_reset(body.token, body.new_password)
    return Response(status_code=204)


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
        400: {"model": OAuthErrorAnswer, "description": "RFC 6749 §5.2 error."},
        **_THROTTLED,
    },
    summary="OAuth 2.0 token endpoint (password and refresh_token grants)",
    openapi_extra=_form_requires(grant_type={"type": "string", "enum": _GRANT_TYPES}),
)
async def token(
    request: Request,
    auth: AuthServiceDep,
    client_ip: ClientIP,
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    refresh_token: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    form = await request.form()
    if repeated := sorted({name for name in form if len(form.getlist(name)) > 1}):
        raise InvalidRequest(f"Repeated parameter: {', '.join(repeated)}.")
    if grant_type == "password":
        if not username or password is None:
            raise InvalidRequest("username and password are required.")
        pair = await auth.password_grant(username, password, client_ip)
    elif grant_type == "refresh_token":
        if not refresh_token:
            raise InvalidRequest("refresh_token is required.")
        pair = await auth.refresh_grant(refresh_token, client_ip)
    elif grant_type is None:
        raise InvalidRequest("grant_type is required.")
    else:
        raise UnsupportedGrantType("Use grant_type password or refresh_token.")
    return JSONResponse(pair.model_dump(), headers=NO_STORE)


@router.post(
    "/revoke",
    response_class=Response,
    responses={
        200: {"description": "Revoked, or it was not a valid token (RFC 7009 §2.2)."},
        400: {"model": OAuthErrorAnswer, "description": "No token was given."},
    },
    summary="RFC 7009 revocation of a refresh token (sign out)",
    openapi_extra=_form_requires(token={"type": "string", "minLength": 1}),
)
async def revoke(
    auth: AuthServiceDep,
    token: Annotated[str | None, Form()] = None,
    token_type_hint: Annotated[str | None, Form()] = None,
) -> Response:
    if not token:
        raise InvalidRequest("token is required.")
    # Answered alike whether or not the token was valid (RFC 7009 §2.2).
    await auth.revoke(token)
    return Response(status_code=200, headers=NO_STORE)


@router.get("/me", response_model=UserPublic)
async def me(token: CurrentToken, auth: AuthServiceDep) -> UserPublic:
    return await auth.account(token.subject)


@router.delete(
    "/me",
    status_code=204,
    responses={
        400: {"model": Problem, "description": "The password is wrong."},
        **_THROTTLED,
    },
    summary="Delete the account (and, through the tasks service, every task of it)",
)
async def delete_me(
    body: AccountDeletion, token: CurrentToken, auth: AuthServiceDep, client_ip: ClientIP
) -> Response:
    await auth.closure.delete_own(token.subject, body.password, client_ip)
    return Response(status_code=204)


@router.post(
    "/password",
    status_code=204,
    responses={
        400: {"model": Problem, "description": "The current password is wrong."},
        **_THROTTLED,
    },
)
async def change_password(
    body: PasswordChange, token: CurrentToken, auth: AuthServiceDep, client_ip: ClientIP
) -> Response:
    await auth.change_password(token.subject, body.current_password, body.new_password, client_ip)
    return Response(status_code=204)


@well_known.get("/jwks.json", summary="The public keys that verify access tokens")
async def jwks(auth: AuthServiceDep) -> JSONResponse:
    max_age = auth.settings.auth_jwks_max_age_seconds
    return JSONResponse(auth.keys.jwks(), headers={"Cache-Control": f"public, max-age={max_age}"})


@well_known.get("/oauth-authorization-server", summary="RFC 8414 authorization server metadata")
async def metadata(auth: AuthServiceDep) -> JSONResponse:
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
