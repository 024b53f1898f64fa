"""The auth service's settings, read from the environment."""

from pathlib import Path
from typing import Any, Literal, Self

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

    # Account lifecycle: links in mails point at PUBLIC_URL (the client application;
    # unset, the public base TOKEN_ISSUER names); one-time tokens expire after these.
    public_url: str | None = None
    auth_require_verified_email: bool = False
    auth_verification_token_seconds: int = Field(default=24 * 3600, ge=60)
    auth_reset_token_seconds: int = Field(default=30 * 60, ge=60)
    # Verification mails resent, and password resets asked for, per address and
    # per client IP per throttle window.
    auth_mail_requests_per_address: int = Field(default=3, ge=1)
    auth_mail_requests_per_ip: int = Field(default=20, ge=1)

    # Mail: queued in the same transaction as the change that causes it (an outbox
    # in schema "auth"), delivered by a background worker. No SMTP_HOST: mails are
    # queued and kept, nothing is sent.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    # starttls: upgrade a plain connection (port 587); tls: implicit TLS (port 465);
    # none: plain SMTP (a local relay or a development sink only).
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_sender: str = "taskstack <no-reply@localhost>"
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Where account events (deleted, disabled, enabled) are pushed: the tasks service's
    # internal endpoint, inside the cluster. Unset: events are kept, not delivered.
    auth_events_url: str | None = None
    # Delivery retries back off from the base, doubling, up to the cap; a row is
    # leased to one replica while it works on it.
    outbox_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    outbox_retry_base_seconds: float = Field(default=2.0, gt=0)
    outbox_retry_max_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _production_strength(self) -> Self:
        if (
            self.environment is Environment.PRODUCTION
            and self.auth_bcrypt_cost < MINIMUM_PRODUCTION_BCRYPT_COST
        ):
            raise ValueError(
                f"AUTH_BCRYPT_COST must be at least {MINIMUM_PRODUCTION_BCRYPT_COST} in production"
            )
        if (
            self.environment is Environment.PRODUCTION
            and self.public_url is not None
            and not self.public_url.startswith("https://")
        ):
            raise ValueError("PUBLIC_URL must be an https:// URL in production")
        return self

    @property
    def link_base(self) -> str:
        return (self.public_url or self.token_issuer).rstrip("/")
