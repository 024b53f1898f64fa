"""Brute-force throttling, counted in PostgreSQL so every replica sees the same counts.

Each key (an account, a client IP) may fail ``limit`` times per window. Past
that, each further failure blocks the key for twice as long as the last time,
from a base delay up to a cap: an attacker slows to a crawl, while a victim
whose account is being attacked is never locked out for longer than the cap.
"""

import hashlib
import math
import random
from dataclasses import dataclass

from sqlalchemy import text

from taskstack.auth.config import AuthSettings
from taskstack.common.db import Connection, Statement, execute, fetch_one
from taskstack.common.text import storable_text

_RECORD = Statement.of(
    text(
        """
    INSERT INTO auth.throttle_counter AS c (key, failures, window_started_at)
    VALUES (:key, 1, now())
    ON CONFLICT (key) DO UPDATE SET
        failures = CASE WHEN c.window_started_at < now() - make_interval(secs => :window)
                         AND (c.blocked_until IS NULL OR c.blocked_until < now())
                        THEN 1 ELSE c.failures + 1 END,
        window_started_at = CASE WHEN c.window_started_at < now() - make_interval(secs => :window)
                                  AND (c.blocked_until IS NULL OR c.blocked_until < now())
                                 THEN now() ELSE c.window_started_at END
    RETURNING failures
    """
    )
)
_BLOCK = Statement.of(
    text(
        "UPDATE auth.throttle_counter SET blocked_until = now() + make_interval(secs => :delay) "
        "WHERE key = :key"
    )
)
_BLOCKED_FOR = Statement.of(
    text(
        "SELECT extract(epoch FROM max(blocked_until) - now()) FROM auth.throttle_counter "
        "WHERE key = ANY(:keys) AND blocked_until > now()"
    )
)
_CLEAR = Statement.of(text("DELETE FROM auth.throttle_counter WHERE key = :key"))
# Bounded, occasional clean-up of counters nobody has touched for a long time.
_PURGE = Statement.of(
    text(
        """
    DELETE FROM auth.throttle_counter WHERE key IN (
        SELECT key FROM auth.throttle_counter
        WHERE window_started_at < now() - make_interval(secs => :keep)
          AND (blocked_until IS NULL OR blocked_until < now())
        LIMIT 100)
    """
    )
)
PURGE_PROBABILITY = 0.02


# The key column holds 300 characters of PostgreSQL text, which cannot hold
# NUL. A value that would not fit (only a made-up login name can be one) is
# counted under its digest instead.
_MAX_PLAIN_VALUE = 250


@dataclass(frozen=True)
class Policy:
    prefix: str
    limit: int

    def key(self, value: str) -> str:
        if len(value) > _MAX_PLAIN_VALUE or not storable_text(value):
            encoded = value.encode("utf-8", "surrogatepass")
            value = "sha256:" + hashlib.sha256(encoded).hexdigest()
        return f"{self.prefix}:{value}"


class Throttle:
    def __init__(self, settings: AuthSettings):
        self.login_account = Policy("login-account", settings.auth_login_failures_per_account)
        self.login_ip = Policy("login-ip", settings.auth_login_failures_per_ip)
        self.register_ip = Policy("register-ip", settings.auth_registrations_per_ip)
        self.mail_address = Policy("mail-address", settings.auth_mail_requests_per_address)
        self.mail_ip = Policy("mail-ip", settings.auth_mail_requests_per_ip)
        self._window = settings.auth_throttle_window_seconds
        self._base = settings.auth_throttle_base_delay_seconds
        self._cap = settings.auth_throttle_max_delay_seconds

    async def retry_after(self, connection: Connection, keys: list[str]) -> int:
        """Seconds until every one of ``keys`` may try again; 0 when none is blocked."""
        row = await fetch_one(connection, _BLOCKED_FOR, {"keys": keys})
        remaining = row[0] if row else None
        return math.ceil(remaining) if remaining is not None else 0

    async def record_failure(self, connection: Connection, policy: Policy, value: str) -> None:
        key = policy.key(value)
        row = await fetch_one(connection, _RECORD, {"key": key, "window": self._window})
        assert row is not None
        (failures,) = row
        if failures >= policy.limit:
            delay = min(self._base * 2 ** min(failures - policy.limit, 32), self._cap)
            await execute(connection, _BLOCK, {"key": key, "delay": delay})
        if random.random() < PURGE_PROBABILITY:  # noqa: S311 - sampling, not crypto
            keep = 2 * max(self._window, self._cap)
            await execute(connection, _PURGE, {"keep": keep})

    async def clear(self, connection: Connection, policy: Policy, value: str) -> None:
        await execute(connection, _CLEAR, {"key": policy.key(value)})
