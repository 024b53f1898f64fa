"""The keys that verify access tokens: known in-process, or auth's JWKS fetched and kept fresh.

auth verifies with its own public keys (``StaticKeySet``); every other service
fetches auth's JWKS (``remote_jwks``): once at start-up, then in the background
and, for a token with an unknown ``kid``, at most once per cooldown. Never on
a request's path otherwise.
"""

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from taskstack.common.metrics import JWKS_REFRESHES
from taskstack.common.telemetry import instrument_client

logger = logging.getLogger(__name__)

ALGORITHM = "ES256"
KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
JWKS_FETCH_TIMEOUT = 5.0


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
            and KID.fullmatch(kid)
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


@contextlib.asynccontextmanager
async def remote_jwks(url: str, *, ttl: float, cooldown: float) -> AsyncIterator[RemoteKeySet]:
    """auth's JWKS for the life of the block: fetched once, then kept fresh in the background.

    A failed first fetch is not fatal: the service's readiness stays false (see
    ``RemoteKeySet.loaded``) and the background loop keeps trying.
    """
    async with httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT) as client:
        instrument_client(client)  # the fetch is traced and carries traceparent
        keys = RemoteKeySet(url, client=client, ttl=ttl, cooldown=cooldown)
        await keys.refresh()
        refresher = asyncio.create_task(keys.run(), name="jwks-refresh")
        try:
            yield keys
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
