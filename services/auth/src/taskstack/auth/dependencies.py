"""Annotated dependency aliases of the auth routes.

``async def`` even where nothing is awaited: FastAPI runs a plain ``def``
dependency in its thread pool, a hand-off per request for nothing.
"""

from typing import Annotated

from fastapi import Depends, Request

from taskstack.auth.service import AuthService


async def _auth(request: Request) -> AuthService:
    auth: AuthService = request.app.state.auth
    return auth


async def _client_ip(request: Request) -> str:
    # uvicorn has already replaced the peer with X-Forwarded-For's client when,
    # and only when, the peer is a trusted proxy (FORWARDED_ALLOW_IPS).
    return request.client.host if request.client else "unknown"


AuthServiceDep = Annotated[AuthService, Depends(_auth)]
ClientIP = Annotated[str, Depends(_client_ip)]
