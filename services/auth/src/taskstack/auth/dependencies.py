"""Annotated dependency aliases of the auth routes.

``async def`` even where nothing is awaited: FastAPI runs a plain ``def``
dependency in its thread pool, a hand-off per request for nothing.
"""

from typing import Annotated

from fastapi import Depends, Request

from taskstack.auth.models import User
from taskstack.auth.service import Auth
from taskstack.common.db import SessionDep
from taskstack.common.tokens import CurrentToken, Unauthorized


async def _auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


async def _client_ip(request: Request) -> str:
    # uvicorn has already replaced the peer with X-Forwarded-For's client when,
    # and only when, the peer is a trusted proxy (FORWARDED_ALLOW_IPS).
    return request.client.host if request.client else "unknown"


async def _current_user(token: CurrentToken, session: SessionDep) -> User:
    user = await session.get(User, token.subject)
    if user is None:
        raise Unauthorized("The access token's account no longer exists.")
    return user


AuthDep = Annotated[Auth, Depends(_auth)]
ClientIP = Annotated[str, Depends(_client_ip)]
CurrentUser = Annotated[User, Depends(_current_user)]
