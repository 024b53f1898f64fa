"""The tasks service's settings, read from the environment."""

from pydantic import Field, SecretStr, field_validator

from taskstack.common.settings import DEVELOPMENT_SECRET_MARKER, ServiceSettings


class TasksSettings(ServiceSettings):
    # Where auth publishes its public keys; fetched at start-up and then in the
    # background, never on the request path.
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwks_cache_seconds: float = Field(default=300.0, ge=1, le=86_400)
    jwks_refetch_cooldown_seconds: float = Field(default=30.0, ge=0, le=3_600)

    # Signs list cursors, so a client cannot forge one (another user's, another
    # query's). Every replica must share it; rotating it invalidates open cursors.
    tasks_cursor_secret: SecretStr = SecretStr(
        f"{DEVELOPMENT_SECRET_MARKER}-tasks-cursor-secret-change-me"
    )
    # How long an Idempotency-Key is remembered; clients may retry within it.
    tasks_idempotency_hours: int = Field(default=24, ge=24, le=24 * 30)
    # Answer the plain first page and a plain get before the framework (front.py);
    # off, every request goes through the FastAPI routes (the answers are the same).
    tasks_front: bool = True
    # Tasks one user may hold; a create past it is refused with 403. Counted per owner
    # (models.TaskCount) in the statement that creates or deletes, so a create stays O(1)
    # however many tasks the user has. No "off" value: set it high to effectively lift it.
    tasks_max_tasks_per_user: int = Field(default=100_000, ge=1, le=2**31 - 1)
    # API requests one user may make per minute, across every replica (ratelimit.py);
    # past it, 429 until the minute ends.
    tasks_rate_limit_per_minute: int = Field(default=1200, ge=1, le=2**31 - 1)
    # How often each replica adds its counts to the shared ones in PostgreSQL and learns
    # the totals: the other replicas' requests are seen this late at most.
    tasks_rate_limit_sync_seconds: float = Field(default=1.0, ge=0.05, le=60)

    @field_validator("tasks_cursor_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < 16:
            raise ValueError("must be at least 16 bytes")
        return value
