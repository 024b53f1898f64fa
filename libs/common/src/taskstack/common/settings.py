"""Base settings every taskstack service reads from its environment (twelve-factor)."""

from enum import StrEnum
from typing import Annotated, Literal, Self, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Every secret that tooling generates for development carries this marker, so
# a production service can recognise and refuse one wherever it came from.
DEVELOPMENT_SECRET_MARKER = "insecure-development"


_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}

# libpq's only sslmode that checks both the server's certificate chain and its name.
VERIFYING_SSLMODE = "verify-full"


def normalize_database_url(url: str) -> URL:
    """Accept the URL spellings PostgreSQL providers hand out; always use psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("not a URL") from None
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(
            f"scheme {parsed.drivername!r} is not one of "
            "postgres://, postgresql://, postgresql+psycopg://"
        )
    return parsed.set(drivername="postgresql+psycopg")


def verifies_server(url: str) -> bool:
    """Whether libpq, given ``url``, checks the server's certificate against a CA and its name.

    sslrootcert is required too: without it libpq reads ~/.postgresql/root.crt, which a
    container does not have ("system" means the operating system's CA store, libpq 16+).
    """
    query = normalize_database_url(url).query
    verifying = _last(query.get("sslmode")) == VERIFYING_SSLMODE
    return verifying and bool(_last(query.get("sslrootcert")))


def _last(value: str | tuple[str, ...] | None) -> str | None:
    # A repeated option is a tuple; libpq, like psycopg, uses the last one.
    return value[-1] if isinstance(value, tuple) else value


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class ServiceSettings(BaseSettings):
    """Settings shared by every service; each service subclasses it."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    environment: Environment = Environment.DEVELOPMENT
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    access_log: bool = True

    database_url: SecretStr
    # Migrations hold a session-level advisory lock, which a transaction-mode
    # pooler cannot keep: point this at the direct (unpooled) endpoint then.
    database_migration_url: SecretStr | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_max_overflow: int = Field(default=0, ge=0, le=200)
    database_pool_timeout: float = Field(default=5.0, gt=0, le=60)
    database_connect_timeout: int = Field(default=5, ge=1, le=60)
    # A pooled connection idle longer than this is checked with a round trip before a
    # request uses it; 0 checks every time. One idle for less is used unchecked (its
    # first statement waits at most DATABASE_CONNECT_TIMEOUT for an answer), unless
    # the server has sent something on it meanwhile, as it does when it ends one.
    database_pool_check_idle_seconds: float = Field(default=30.0, ge=0, le=3_600)
    database_startup_timeout: float = Field(default=30.0, ge=0, le=600)
    # None: detect from the host name (Neon's pooled endpoints contain "-pooler").
    database_transaction_pooler: bool | None = None
    # Behind a transaction-mode pooler, statements are prepared only when this says the
    # pooler supports protocol-level prepared statements (PgBouncer 1.21 or later with
    # max_prepared_statements set; Neon's pooled endpoints do). Direct connections
    # always prepare the statements they run again and again.
    database_pooler_prepared_statements: bool = False
    # Production refuses a database URL that does not verify the server (sslmode=verify-full
    # with sslrootcert): a URL that only encrypts lets anyone on the path pose as the database.
    # True says the network itself is trusted (a private link, a sidecar, a Unix socket).
    database_trusted_network: bool = False

    # Access tokens: the auth service issues them with these values, every
    # service checks them exactly.
    token_issuer: str = "http://127.0.0.1:8000"
    token_audience: str = "taskstack"
    # The audience of the tokens auth signs for calls between services (account events
    # pushed to tasks): never the users' audience.
    internal_token_audience: str = "taskstack-internal"
    token_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Verified access tokens remembered (until they expire) so that each one's
    # signature is checked once, not on every request; 0 checks every request.
    # An entry is about 1 KB.
    token_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)

    # Admission (common/admission.py): API requests one process works on at
    # once, how many may wait for a place and for how long, and the least
    # Retry-After a refusal carries (it grows while refusals outnumber admissions).
    admission_limit: int = Field(default=32, ge=1, le=10_000)
    admission_queue_limit: int = Field(default=32, ge=0)
    admission_queue_timeout_seconds: float = Field(default=0.01, ge=0, le=10)
    admission_retry_after_seconds: int = Field(default=1, ge=1, le=30)

    readiness_timeout: float = Field(default=2.0, gt=0, le=30)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    cors_allowed_origins: Annotated[list[str], NoDecode] = []

    @field_validator("cors_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("database_url", "database_migration_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            normalize_database_url(value.get_secret_value())  # raises ValueError when unusable
        return value

    @model_validator(mode="after")
    def _refuse_development_values_in_production(self) -> Self:
        if self.environment is not Environment.PRODUCTION:
            return self
        if "*" in self.cors_allowed_origins:
            raise ValueError("CORS_ALLOWED_ORIGINS must list origins explicitly in production")
        if self.internal_token_audience == self.token_audience:
            raise ValueError("INTERNAL_TOKEN_AUDIENCE must differ from TOKEN_AUDIENCE")
        if not self.token_issuer.startswith("https://"):
            raise ValueError("TOKEN_ISSUER must be an https:// URL in production")
        for name, value in self:
            if (
                isinstance(value, SecretStr)
                and DEVELOPMENT_SECRET_MARKER in value.get_secret_value()
            ):
                raise ValueError(f"{name.upper()} holds a development secret; refusing to start")
        if not self.database_trusted_network:
            for name in ("database_url", "database_migration_url"):
                url: SecretStr | None = getattr(self, name)
                if url is not None and not verifies_server(url.get_secret_value()):
                    raise ValueError(
                        f"{name.upper()} must verify the server in production: add "
                        f"sslmode={VERIFYING_SSLMODE}&sslrootcert=system (or the path of a CA "
                        "bundle), or set DATABASE_TRUSTED_NETWORK=true if the network is trusted"
                    )
        return self

    @property
    def database(self) -> URL:
        return normalize_database_url(self.database_url.get_secret_value())

    @property
    def migration_database(self) -> URL:
        url = self.database_migration_url or self.database_url
        return normalize_database_url(url.get_secret_value())

    @property
    def uses_transaction_pooler(self) -> bool:
        if self.database_transaction_pooler is not None:
            return self.database_transaction_pooler
        return is_pooler_host(self.database)


def is_pooler_host(url: URL) -> bool:
    """Whether ``url`` names a pooled endpoint by its host (Neon's contain "-pooler")."""
    return "-pooler" in (url.host or "")


class MigrationSettings(ServiceSettings):
    """What a migration command reads: the shared settings, and the migration's own."""

    # How long a migration waits for another one's advisory lock before it gives up with
    # an error naming the holder: shorter than the deploy Job's deadline, so a leaked
    # lock fails the Job with that message instead of a silent hang.
    database_migration_lock_timeout_seconds: float = Field(default=60.0, gt=0, le=3_600)

    @model_validator(mode="after")
    def _refuse_a_pooled_migration_url(self) -> Self:
        # A transaction-mode pooler hands each transaction to any server connection: the
        # session-level advisory lock serialising migrations could be taken on one server
        # session and never released, and every later migration would wait on it.
        if self.database_migration_url is None:
            if self.uses_transaction_pooler:
                raise ValueError(
                    "DATABASE_URL is a transaction-mode pooler: set DATABASE_MIGRATION_URL "
                    "to the direct (unpooled) endpoint for migrations"
                )
        elif is_pooler_host(self.migration_database):
            raise ValueError(
                "DATABASE_MIGRATION_URL names a pooled endpoint (its host contains "
                '"-pooler"): use the direct endpoint for migrations'
            )
        return self


Settings = TypeVar("Settings", bound=BaseSettings)


def from_environment(settings: type[Settings], program: str) -> Settings:
    """``settings`` read from the environment, or an exit with one line naming what is
    wrong: pydantic's own message quotes the values it refused, and a database URL
    or a key holds secrets that must never reach a log."""
    try:
        return settings()
    except ValidationError as exc:
        raise SystemExit(f"{program}: {describe_settings_error(exc)}") from None


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each bad environment variable, never echoing its value."""
    problems = []
    for error in exc.errors():
        variable = "_".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{variable}: {message}" if variable else message)
    return "invalid configuration: " + "; ".join(problems)
