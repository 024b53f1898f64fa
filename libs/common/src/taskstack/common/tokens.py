"""Verification of taskstack access tokens (RFC 9068 JWTs signed by the auth service).

The algorithm is pinned (ES256), every registered claim is required, ``iss``
and ``aud`` must match exactly, ``typ`` must say at+jwt, and the small leeway
is the only tolerance. Keys come from a key set: the auth service's own, or a
JWKS fetched over HTTP and cached (``RemoteKeySet``). Headers that point at
other keys (``jku``, ``x5u``, ``jwk``, ``x5c``) are never followed: a token
carrying one is refused, as is one with ``crit`` (no extension is understood).
"""

import asyncio
import logging
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import httpx
import jwt
from cachetools import TLRUCache
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from taskstack.common.errors import AppError
from taskstack.common.metrics import JWKS_REFRESHES, TOKEN_VERIFICATION_FAILURES

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti")
MAX_TOKEN_BYTES = 4096
TOKEN_PATH = "/v1/auth/token"
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_REFUSED_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})


class InvalidToken(Exception):
    """Why a token was refused; the reason is for logs and metrics, never for the client."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Unauthorized(AppError):
    status_code = 401

    def __init__(self, detail: str, *, error: str | None = "invalid_token"):
        challenge = 'Bearer realm="taskstack"'
        if error:
            challenge += f', error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


@dataclass(frozen=True)
class AccessToken:
    """A verified access token: who it speaks for, and until when."""

    subject: uuid.UUID
    token_id: str
    expires_at: int


class KeySet(Protocol):
    async def key(self, kid: str) -> EllipticCurvePublicKey | None: ...


class StaticKeySet:
    """Keys known in-process (the auth service verifies with its own public keys)."""

    def __init__(self, keys: Mapping[str, EllipticCurvePublicKey]):
        self.keys = dict(keys)

    async def key(self, kid: str) -> EllipticCurvePublicKey | None:
        return self.keys.get(kid)


def public_keys_from_jwks(document: Any) -> dict[str, EllipticCurvePublicKey]:
    """The P-256 signing keys of a JWKS; a key with a private part is refused outright."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, EllipticCurvePublicKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or "d" in entry:
            raise ValueError("a JWKS entry is malformed or carries a private key")
        kid = entry.get("kid")
        usable = (
            entry.get("kty") == "EC"
            and entry.get("crv") == "P-256"
            and entry.get("alg", ALGORITHM) == ALGORITHM
            and entry.get("use", "sig") == "sig"
            and isinstance(kid, str)
            and _KID.fullmatch(kid)
        )
        if usable:
            key = jwt.PyJWK(entry, ALGORITHM).key
            if isinstance(key, EllipticCurvePublicKey):
                keys[str(kid)] = key
    return keys


class RemoteKeySet:
    """A JWKS fetched over HTTP(S): cached for ``ttl`` seconds, refreshed in the background.

    An unknown ``kid`` triggers a refetch at most once per ``cooldown``, so a
    flood of made-up kids cannot hammer the auth service; a failed fetch keeps
    the last good keys.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient,
        ttl: float = 300.0,
        cooldown: float = 30.0,
    ):
        self.url = url
        self.ttl = ttl
        self.cooldown = cooldown
        self._client = client
        self._keys: dict[str, EllipticCurvePublicKey] = {}
        self._loaded = False
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def key(self, kid: str) -> EllipticCurvePublicKey | None:
        if kid not in self._keys and time.monotonic() - self._last_attempt >= self.cooldown:
            await self.refresh(only_if_older_than=self.cooldown)
        return self._keys.get(kid)

    async def refresh(self, *, only_if_older_than: float = 0.0) -> bool:
        """Fetch the JWKS once (concurrent callers share one fetch); True when it succeeded."""
        async with self._lock:
            if time.monotonic() - self._last_attempt < only_if_older_than:
                return self._loaded
            self._last_attempt = time.monotonic()
            try:
                response = await self._client.get(self.url)
                response.raise_for_status()
                keys = public_keys_from_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("JWKS refresh failed", extra={"url": self.url, "error": str(exc)})
                JWKS_REFRESHES.labels("failure").inc()
                return False
            JWKS_REFRESHES.labels("success").inc()
            self._keys = keys
            self._loaded = True
            return True

    async def run(self) -> None:
        """Keep the keys fresh until cancelled: every ttl, sooner while fetches fail."""
        retry = 1.0
        while True:
            if await self.refresh():
                retry = 1.0
                await asyncio.sleep(self.ttl * random.uniform(0.9, 1.0))  # noqa: S311 - jitter
            else:
                await asyncio.sleep(retry)
                retry = min(retry * 2, self.ttl)


@dataclass(frozen=True)
class _Verified:
    token: AccessToken
    kid: str
    key: EllipticCurvePublicKey


class TokenVerifier:
    """Checks access tokens; a token that passed is remembered until it expires.

    Checking an ES256 signature and the claims takes about 150 µs
    (tests/bench/token_algorithms.py) and was 8% of a task list request's
    samples under load, while a client sends the same token for its whole
    lifetime. So a verified token is kept in a bounded LRU,
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
    ):
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self._verified: TLRUCache[str, _Verified] | None = (
            TLRUCache(cache_size, ttu=self._valid_until, timer=time.time) if cache_size else None
        )

    def _valid_until(self, _: str, verified: _Verified, now: float) -> float:
        return verified.token.expires_at + self.leeway

    async def verify(self, token: str) -> AccessToken:
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
        if not isinstance(kid, str) or not _KID.fullmatch(kid):
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


# Documents the bearer scheme in OpenAPI (Swagger UI's Authorize button runs the
# password grant against the auth service); the check itself is ours.
_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_PATH, auto_error=False)


async def _current_token(
    request: Request, token: Annotated[str | None, Depends(_bearer)]
) -> AccessToken:
    if not token:
        raise Unauthorized("An access token is required.", error=None)
    verifier: TokenVerifier = request.app.state.token_verifier
    try:
        return await verifier.verify(token)
    except InvalidToken as exc:
        logger.info("access token refused", extra={"reason": exc.reason})
        TOKEN_VERIFICATION_FAILURES.labels(request.app.state.service, exc.reason).inc()
        raise Unauthorized("The access token is invalid or has expired.") from None


CurrentToken = Annotated[AccessToken, Depends(_current_token)]
