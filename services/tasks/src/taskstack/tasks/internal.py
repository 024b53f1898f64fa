"""Internal routes: called by auth inside the cluster, never routed by the ingress (which
routes /v1/tasks only), each authenticated by a token auth signs for the internal audience."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from taskstack.common.tokens import AccessToken, authenticate_with
from taskstack.tasks.models import AccountEvent

internal = APIRouter(prefix="/internal", include_in_schema=False)


async def _auth_service(request: Request) -> AccessToken:
    return await authenticate_with(request, request.app.state.internal_token_verifier)


AuthServiceCaller = Annotated[AccessToken, Depends(_auth_service)]


@internal.post("/account-events", status_code=204)
async def account_event(event: AccountEvent, request: Request, _: AuthServiceCaller) -> Response:
    await request.app.state.tasks.apply_account_event(event)
    return Response(status_code=204)
