"""Verification of taskstack access tokens (RFC 9068 JWTs signed by the auth service).

The algorithm is pinned (ES256), every registered claim is required, ``iss``
and ``aud`` must match exactly, ``typ`` must say at+jwt, and the small leeway
is the only tolerance. Keys come from a key set (``taskstack.common.jwks``):
auth's own, or its JWKS fetched and cached. Headers that point at other keys
(``jku``, ``x5u``, ``jwk``, ``x5c``) are never followed: a token carrying one
is refused, as is one with ``crit`` (no extension is understood).
"""

import logging
import time
import uuid
from collections.abc import Container
from dataclasses import dataclass
from typing import Annotated

import jwt
from cachetools import TLRUCache
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from fastapi.security.base import SecurityBase

from taskstack.common.errors import Unauthorized
from taskstack.common.jwks import ALGORITHM, KID, KeySet
from taskstack.common.metrics import TOKEN_VERIFICATION_FAILURES
from taskstack.common.settings import ServiceSettings

logger = logging.getLogger(__name__)

TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti")
MAX_TOKEN_BYTES = 4096
TOKEN_PATH = "/v1/auth/token"
_REFUSED_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})


class InvalidToken(Exception):
    """Why a token was refused; the reason is for logs and metrics, never for the client."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AccessToken:
    """A verified access token: who it speaks for, and until when."""

    subject: uuid.UUID
    token_id: str
    expires_at: int


@dataclass(frozen=True)
class _Verified:
    token: AccessToken
    kid: str
    key: EllipticCurvePublicKey


class TokenVerifier:
    """Checks access tokens; a token that passed is remembered until it expires.

    A client sends the same token for its whole lifetime, and checking an
    ES256 signature costs more than the rest of a cached read (see the
    performance notes). So a verified token is kept in a bounded LRU,
    keyed on the full token string, until ``exp`` plus the leeway (exactly
    when an uncached check would start refusing it). A cached token whose key
    has left the key set (a retired signing key) is checked afresh, and so
    refused. ``cache_size=0`` checks every request.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        cache_size: int = 10_000,
        denied: Container[uuid.UUID] = frozenset(),
    ):
        self.keys = keys
        # Subjects whose tokens are refused although valid: accounts closed since they
        # were issued (the tasks service's deny list, kept current in the background).
        self.denied = denied
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._verified: TLRUCache[str, _Verified] | None = (
            TLRUCache(cache_size, ttu=self._valid_until, timer=time.time) if cache_size else None
        )

    def _valid_until(self, _: str, verified: _Verified, now: float) -> float:
        return verified.token.expires_at + self.leeway

    async def verify(self, token: str) -> AccessToken:
        access = await self._checked(token)
        if access.subject in self.denied:
            raise InvalidToken("account_closed")
        return access

    async def _checked(self, token: str) -> AccessToken:
        if self._verified is None:
            return (await self._verify(token)).token
        cached = self._verified.get(token)
        if cached is not None:
            key = await self.keys.key(cached.kid)
            if key is cached.key or key == cached.key:
                return cached.token
            del self._verified[token]
        verified = await self._verify(token)
        self._verified[token] = verified
        return verified.token

    async def _verify(self, token: str) -> _Verified:
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise InvalidToken("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("algorithm")
        if str(header.get("typ", "")).lower() not in TOKEN_TYPES:
            raise InvalidToken("type")
        if _REFUSED_HEADERS & header.keys():
            raise InvalidToken("header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not KID.fullmatch(kid):
            raise InvalidToken("kid")
        key = await self.keys.key(kid)
        if key is None:
            raise InvalidToken("unknown_kid")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("not_yet_valid") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("signature") from None
        except jwt.PyJWTError:
            raise InvalidToken("claims") from None
        try:
            subject = uuid.UUID(claims["sub"])
        except (TypeError, ValueError, AttributeError):
            raise InvalidToken("claims") from None
        if not isinstance(claims["jti"], str) or not isinstance(claims["exp"], int):
            raise InvalidToken("claims")
        access = AccessToken(subject=subject, token_id=claims["jti"], expires_at=claims["exp"])
        return _Verified(access, kid, key)


def token_verifier(
    settings: ServiceSettings, keys: KeySet, *, denied: Container[uuid.UUID] = frozenset()
) -> TokenVerifier:
    """The verifier every service uses, from the settings they share."""
    return TokenVerifier(
        keys,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        leeway=settings.token_leeway_seconds,
        cache_size=settings.token_cache_size,
        denied=denied,
    )


# The subject of the tokens auth signs for the internal audience: auth itself.
INTERNAL_SUBJECT = uuid.UUID(int=0)


def internal_token_verifier(settings: ServiceSettings, keys: KeySet) -> TokenVerifier:
    """The verifier of the tokens auth signs for calls between services: the same checks,
    another audience, so a user's token is never one of them and none is a user's."""
    return TokenVerifier(
        keys,
        issuer=settings.token_issuer,
        audience=settings.internal_token_audience,
        leeway=settings.token_leeway_seconds,
        cache_size=0,
    )


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, read as FastAPI's
    OAuth2PasswordBearer reads it; None for another scheme or none."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


async def authenticate(request: Request) -> AccessToken:
    """The request's verified access token; 401 when it is missing or refused."""
    return await authenticate_with(request, request.app.state.token_verifier)


async def authenticate_with(request: Request, verifier: TokenVerifier) -> AccessToken:
    """The request's bearer token as ``verifier`` accepts it; 401 otherwise."""
    token = bearer_token(request.headers.get("authorization", ""))
    if not token:
        raise Unauthorized("An access token is required.", error=None)
    try:
        return await verifier.verify(token)
    except InvalidToken as exc:
        logger.info("access token refused", extra={"reason": exc.reason})
        TOKEN_VERIFICATION_FAILURES.labels(request.app.state.service, exc.reason).inc()
        raise Unauthorized("The access token is invalid or has expired.") from None


class BearerScheme(SecurityBase):
    """A dependency that authenticates the request, documented in OpenAPI as the bearer
    scheme (Swagger UI's Authorize button runs the password grant against auth).

    One dependency, not FastAPI's scheme with a checking dependency chained on
    it: each link of a chain is resolved on every request. A subclass's
    ``__call__(request)`` calls ``authenticate`` and returns what its routes need.
    """

    def __init__(self) -> None:
        documented = OAuth2PasswordBearer(tokenUrl=TOKEN_PATH)
        self.model = documented.model
        self.scheme_name = documented.scheme_name


class _CurrentToken(BearerScheme):
    async def __call__(self, request: Request) -> AccessToken:
        return await authenticate(request)


CurrentToken = Annotated[AccessToken, Depends(_CurrentToken())]
