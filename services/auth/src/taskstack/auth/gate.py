"""SignInGate: refuses password sign-ins before the framework parses them, while hashing is full.

Hand-written ASGI: no library knows the hasher's bound. In a storm of sign-ins
that clients retry at once (Retry-After ignored), every refusal is work for the
event loop that also serves the JWKS and refreshes. Two things keep that work
small. Here a refusal costs a fraction of what it costs through routing,
dependencies and form parsing. And it is answered after a short pause
(AUTH_OVERLOAD_PAUSE_SECONDS), which holds only the connection: a client that
retries at once can then send at most one sign-in per pause, not one per turn
of the event loop, so a storm cannot fill the loop's turns. The request's
admission place is given back before that pause: a refusal that only waits
must not keep other requests from starting.
"""

import asyncio
import random
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskstack.auth.errors import HashingOverloaded
from taskstack.auth.metrics import LOGINS
from taskstack.auth.service import AuthService
from taskstack.common.admission import PLACE_KEY
from taskstack.common.middleware import replay
from taskstack.common.tokens import TOKEN_PATH


class SignInGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth: AuthService | None = None
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == TOKEN_PATH:
            auth = getattr(scope["app"].state, "auth", None)  # set by the lifespan
        if auth is None or not auth.hasher.full:
            await self.app(scope, receive, send)
            return
        # The body sits behind the body size limit, so reading it whole is bounded.
        body = await _read_body(receive)
        if _is_password_grant(body):
            LOGINS.labels("overloaded").inc()
            if place := scope.get(PLACE_KEY):
                place.give_back()
            # Jittered: refusals answered after one fixed pause come back in step, and
            # each wave of them held the event loop for a stretch.
            pause = auth.settings.auth_overload_pause_seconds
            await asyncio.sleep(random.uniform(0.5 * pause, 1.5 * pause))  # noqa: S311
            await HashingOverloaded().response()(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


async def _read_body(receive: Receive) -> list[Message]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _is_password_grant(messages: list[Message]) -> bool:
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    try:
        form = parse_qs(body.decode("ascii"), max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        return False  # not a form this gate understands: the route answers it
    return form.get("grant_type") == ["password"]
