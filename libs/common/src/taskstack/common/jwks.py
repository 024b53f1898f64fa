"""The keys that verify access tokens: known in-process, or auth's JWKS fetched and kept fresh.

auth verifies with its own public keys (``StaticKeySet``); every other service
fetches auth's JWKS (``remote_jwks``): once at start-up, then in the background
and, for a token with an unknown ``kid``, at most once per cooldown. Never on
a request's path otherwise. When auth sheds load (503 or 429 with
``Retry-After``), no fetch goes out before the time it asked for, jittered so
that every tasks replica does not come back in the same instant.
"""

import asyncio
import contextlib
import datetime
import email.utils
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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
RETRY_LATER_STATUSES = frozenset({429, 503})
# A server that keeps asking for no wait at all is not fetched in a tight loop.
MIN_RETRY_AFTER = 1.0
# A server's Retry-After is a request, not an order: past a minute, the keys
# would go stale for longer than the background loop's own backoff allows.
MAX_RETRY_WAIT = 60.0
_DELAY_SECONDS = re.compile(r"[0-9]{1,10}")


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


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """The wait a ``Retry-After`` value asks for (RFC 9110 §10.2.3: delay-seconds or an
    HTTP-date, compared with ``now``, wall-clock seconds); None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    wall = time.time() if now is None else now
    # An HTTP-date is always GMT; a zone-less one is read as such.
    seconds = when.timestamp() if when.tzinfo else when.replace(tzinfo=datetime.UTC).timestamp()
    return max(0.0, seconds - wall)


def retry_wait(
    retry_after: float,
    *,
    jitter: Callable[[float, float], float] = random.uniform,
    cap: float = MAX_RETRY_WAIT,
) -> float:
    """How long to wait after a ``Retry-After`` of ``retry_after`` seconds: that times
    U(1, 2), so that the clients a server shed together do not return together; capped."""
    return min(max(retry_after, MIN_RETRY_AFTER) * jitter(1.0, 2.0), cap)


class RemoteKeySet:
    """A JWKS fetched over HTTP(S): cached for ``ttl`` seconds, refreshed in the background.

    An unknown ``kid`` triggers a refetch at most once per ``cooldown``, so a
    flood of made-up kids cannot hammer the auth service; a failed fetch keeps
    the last good keys. A 503 or 429 with ``Retry-After`` holds every fetch
    back for ``retry_wait`` of it, instead of the cooldown or the backoff.
    ``clock``, ``sleep`` and ``jitter`` are the time and randomness it uses.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient,
        ttl: float = 300.0,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[float, float], float] = random.uniform,
    ):
        self.url = url
        self.ttl = ttl
        self.cooldown = cooldown
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._keys: dict[str, EllipticCurvePublicKey] = {}
        self._loaded = False
        self._last_attempt = float("-inf")
        self._not_before = float("-inf")  # on the clock: auth asked to wait until then
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def held_for(self) -> float:
        """Seconds before auth's ``Retry-After`` lets the next fetch go (0: it may go now)."""
        return max(0.0, self._not_before - self._clock())

    async def key(self, kid: str) -> EllipticCurvePublicKey | None:
        if kid not in self._keys and self._clock() - self._last_attempt >= self.cooldown:
            await self.refresh(only_if_older_than=self.cooldown)
        return self._keys.get(kid)

    async def refresh(self, *, only_if_older_than: float = 0.0) -> bool:
        """Fetch the JWKS once (concurrent callers share one fetch); True when it succeeded.

        While auth's ``Retry-After`` holds, nothing is sent and the answer is False.
        """
        async with self._lock:
            if self._clock() - self._last_attempt < only_if_older_than:
                return self._loaded
            if self.held_for > 0:
                return False
            self._last_attempt = self._clock()
            try:
                response = await self._client.get(self.url)
                self._hold_if_asked(response)
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

    def _hold_if_asked(self, response: httpx.Response) -> None:
        if response.status_code not in RETRY_LATER_STATUSES:
            return
        asked = retry_after_seconds(response.headers.get("retry-after"))
        if asked is None:
            return
        wait = retry_wait(asked, jitter=self._jitter)
        self._not_before = self._clock() + wait
        logger.warning(
            "JWKS fetch asked to retry later",
            extra={"url": self.url, "status": response.status_code, "retry_in_seconds": wait},
        )

    async def run(self) -> None:
        """Keep the keys fresh until cancelled: every ttl, sooner while fetches fail, and
        never before auth's ``Retry-After`` allows."""
        retry = 1.0
        while True:
            if await self.refresh():
                retry = 1.0
                await self._sleep(self.ttl * self._jitter(0.9, 1.0))
            elif held := self.held_for:
                await self._sleep(held)
            else:
                await self._sleep(retry)
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
