"""The auth service's settings, read from the environment."""

from pathlib import Path
from typing import Any, Self

from pydantic import Field, SecretStr, model_validator

from taskstack.common.cpu import usable_cpus
from taskstack.common.settings import DEVELOPMENT_SECRET_MARKER, Environment, ServiceSettings

MINIMUM_PRODUCTION_BCRYPT_COST = 12


def _hash_concurrency(settings: dict[str, Any]) -> int:
    millicores = settings.get("auth_cpu_limit_millicores")
    return usable_cpus(None if millicores is None else millicores / 1000)


class AuthSettings(ServiceSettings):
    # A directory of "<kid>.pem" EC P-256 private keys (a mounted Secret): every
    # key is published in the JWKS; the one named by AUTH_SIGNING_KEY_ID signs.
    auth_signing_keys_dir: Path
    auth_signing_key_id: str | None = None
    # Keys the HMAC pre-hash of every password; changing it invalidates every password.
    auth_password_pepper: SecretStr = SecretStr(f"{DEVELOPMENT_SECRET_MARKER}-pepper")
    auth_bcrypt_cost: int = Field(default=12, ge=4, le=16)
    # The container's CPU limit, in thousandths of a CPU: the chart passes
    # limits.cpu through the Downward API. Unset: the cgroup's quota alone.
    auth_cpu_limit_millicores: int | None = Field(default=None, ge=1)
    # Hashing runs in threads: this many at once, and at most this many waiting
    # (further logins get a fast 503 instead of a growing queue).
    # The default is the CPUs this process may really use: the least of its
    # affinity, its cgroup's CPU quota and AUTH_CPU_LIMIT_MILLICORES, not the
    # node's cores. More hashing threads than that only run the pod into its
    # quota, and a throttled pod answers nothing, /livez included, until the
    # next period.
    auth_hash_concurrency: int = Field(default_factory=_hash_concurrency, ge=1, le=64)
    # A bounded queue: a sign-in waits for at most this many hashes (a few
    # hundred ms each) and the rest of a storm is refused at once. Long enough
    # that clients whose earlier requests are still being hashed (they gave
    # up, the server has not) do not push a steady handful of sign-ins over it.
    auth_hash_queue_limit: int = Field(default=16, ge=0, le=10_000)
    # The longest a sign-in waits for a hashing thread before its 503: a
    # backstop for a machine far slower than the queue limit assumes.
    auth_hash_queue_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A sign-in refused because hashing is full is answered after this pause
    # (holding only its connection), so that clients retrying at once cannot
    # keep the event loop busy with refusals; see taskstack.auth.gate.
    auth_overload_pause_seconds: float = Field(default=0.05, ge=0, le=1)

    auth_access_token_seconds: int = Field(default=600, ge=60, le=3600)
    auth_refresh_token_absolute_seconds: int = Field(default=30 * 86400, ge=60)
    auth_refresh_token_idle_seconds: int = Field(default=14 * 86400, ge=60)

    # Failed logins counted per account and per client IP, in PostgreSQL.
    auth_login_failures_per_account: int = Field(default=5, ge=1)
    auth_login_failures_per_ip: int = Field(default=50, ge=1)
    auth_registrations_per_ip: int = Field(default=20, ge=1)
    auth_throttle_window_seconds: int = Field(default=900, ge=1)
    # Over a limit, each further failure doubles the wait, from the base up to the cap.
    auth_throttle_base_delay_seconds: float = Field(default=1.0, gt=0)
    auth_throttle_max_delay_seconds: float = Field(default=900.0, gt=0)

    auth_jwks_max_age_seconds: int = Field(default=300, ge=0)

    @model_validator(mode="after")
    def _production_strength(self) -> Self:
        if (
            self.environment is Environment.PRODUCTION
            and self.auth_bcrypt_cost < MINIMUM_PRODUCTION_BCRYPT_COST
        ):
            raise ValueError(
                f"AUTH_BCRYPT_COST must be at least {MINIMUM_PRODUCTION_BCRYPT_COST} in production"
            )
        return self
