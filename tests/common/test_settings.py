import os
import subprocess
import sys

import pytest
from pydantic import SecretStr, ValidationError

from taskstack.common.settings import (
    DEVELOPMENT_SECRET_MARKER,
    MigrationSettings,
    ServiceSettings,
    describe_settings_error,
    normalize_database_url,
)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://ada:pw@db.example.com:5432/app?sslmode=require",
        "postgresql://ada:pw@db.example.com:5432/app?sslmode=require",
        "postgresql+psycopg://ada:pw@db.example.com:5432/app?sslmode=require",
    ],
)
def test_every_postgres_spelling_becomes_psycopg(url: str) -> None:
    normalized = normalize_database_url(url)
    assert normalized.drivername == "postgresql+psycopg"
    assert (normalized.username, normalized.password, normalized.host) == (
        "ada",
        "pw",
        "db.example.com",
    )
    assert normalized.database == "app"
    assert normalized.query == {"sslmode": "require"}


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "not a url"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"scheme|not a URL"):
        normalize_database_url(url)


VERIFIED = "sslmode=verify-full&sslrootcert=system"


def settings(**values: object) -> ServiceSettings:
    return ServiceSettings.model_validate(
        {"database_url": f"postgres://u@h/db?{VERIFIED}", **values}
    )


PRODUCTION = {"environment": "production", "token_issuer": "https://api.example.com"}


def test_production_needs_an_https_issuer() -> None:
    assert settings(**PRODUCTION).environment == "production"
    with pytest.raises(ValidationError, match="TOKEN_ISSUER"):
        settings(environment="production")


def test_cors_origins_read_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/db")
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    assert ServiceSettings().cors_allowed_origins == ["https://a.example", "https://b.example"]


def test_no_cors_origin_by_default() -> None:
    assert settings().cors_allowed_origins == []


def test_production_refuses_a_wildcard_origin() -> None:
    assert settings(cors_allowed_origins=["*"]).cors_allowed_origins == ["*"]
    with pytest.raises(ValidationError, match="CORS_ALLOWED_ORIGINS"):
        settings(**PRODUCTION, cors_allowed_origins=["*"])


class SettingsWithSecret(ServiceSettings):
    signing_key: SecretStr | None = None


def test_production_refuses_a_development_secret() -> None:
    dev_secret = f"{DEVELOPMENT_SECRET_MARKER}-abc123"
    base = {"database_url": f"postgres://u@h/db?{VERIFIED}", "signing_key": dev_secret}
    assert SettingsWithSecret.model_validate(base).signing_key is not None
    with pytest.raises(ValidationError, match="SIGNING_KEY holds a development secret"):
        SettingsWithSecret.model_validate({**base, **PRODUCTION})
    production = SettingsWithSecret.model_validate(
        {**base, **PRODUCTION, "signing_key": "a-real-secret"}
    )
    assert production.environment == "production"


def test_a_development_database_password_is_refused_in_production() -> None:
    url = f"postgres://u:{DEVELOPMENT_SECRET_MARKER}@h/db"
    with pytest.raises(ValidationError, match="DATABASE_URL holds a development secret"):
        settings(**PRODUCTION, database_url=url)


def test_settings_errors_read_as_one_line_naming_variables_not_values() -> None:
    with pytest.raises(ValidationError) as caught:
        ServiceSettings.model_validate(
            {"database_url": "mysql://root:hunter2@h/db", "database_pool_size": 0}
        )
    message = describe_settings_error(caught.value)
    assert "\n" not in message
    assert "DATABASE_URL" in message and "DATABASE_POOL_SIZE" in message
    assert "hunter2" not in message


# ---- TLS to the database: production verifies the server, unless told the network is trusted

UNVERIFIED_QUERIES = [
    "",
    "?sslmode=disable",
    "?sslmode=prefer",
    "?sslmode=require",
    "?sslmode=require&channel_binding=require",
    "?sslmode=verify-ca&sslrootcert=system",
    "?sslmode=verify-full",  # no CA: libpq would look in ~/.postgresql, which a pod lacks
    "?sslmode=verify-full&sslrootcert=system&sslmode=require",  # the last one counts
]


@pytest.mark.parametrize("query", UNVERIFIED_QUERIES)
@pytest.mark.parametrize("variable", ["database_url", "database_migration_url"])
def test_production_refuses_a_database_url_that_does_not_verify_the_server(
    query: str, variable: str
) -> None:
    url = f"postgres://taskstack:Hunter2Hunter2@ep-x.neon.tech/db{query}"
    assert getattr(settings(**{variable: url}), variable) is not None  # development: as given
    with pytest.raises(ValidationError) as caught:
        settings(**PRODUCTION, **{variable: url})
    message = describe_settings_error(caught.value)
    assert message == (
        f"invalid configuration: {variable.upper()} must verify the server in production: "
        "add sslmode=verify-full&sslrootcert=system (or the path of a CA bundle), "
        "or set DATABASE_TRUSTED_NETWORK=true if the network is trusted"
    )
    assert "Hunter2" not in message and "neon.tech" not in message


@pytest.mark.parametrize(
    "query",
    [
        "?sslmode=verify-full&sslrootcert=system",
        "?sslmode=verify-full&sslrootcert=/etc/taskstack/database-ca.pem&channel_binding=require",
    ],
)
def test_production_accepts_a_database_url_that_verifies_the_server(query: str) -> None:
    url = f"postgres://u:p@ep-x.neon.tech/db{query}"
    production = settings(**PRODUCTION, database_url=url, database_migration_url=url)
    assert production.database.query["sslmode"] == "verify-full"


def test_a_trusted_network_lets_production_use_any_sslmode() -> None:
    plain = "postgres://u:p@postgres.internal/db?sslmode=disable"
    assert not settings().database_trusted_network
    trusted = settings(**PRODUCTION, database_url=plain, database_trusted_network="true")
    assert trusted.database.query["sslmode"] == "disable"


# ---- migrations: never through a transaction-mode pooler

NEON_POOLED = f"postgres://u:p@ep-x-123-pooler.eu-central-1.aws.neon.tech/db?{VERIFIED}"
NEON_DIRECT = f"postgres://u:p@ep-x-123.eu-central-1.aws.neon.tech/db?{VERIFIED}"


def migration_settings(**values: object) -> MigrationSettings:
    return MigrationSettings.model_validate(values)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"database_url": NEON_POOLED}, "DATABASE_URL"),
        (
            {
                "database_url": f"postgres://u:p@pgbouncer/db?{VERIFIED}",
                "database_transaction_pooler": True,
            },
            "DATABASE_URL",
        ),
        (
            {"database_url": NEON_POOLED, "database_migration_url": NEON_POOLED},
            "DATABASE_MIGRATION_URL",
        ),
    ],
)
def test_migrations_refuse_a_pooled_url_without_a_direct_one(
    values: dict[str, object], variable: str
) -> None:
    assert ServiceSettings.model_validate(values).database_url  # the services may use it
    with pytest.raises(ValidationError) as caught:
        migration_settings(**values)
    message = describe_settings_error(caught.value)
    assert message.startswith(f"invalid configuration: {variable} ")
    assert "direct" in message and "\n" not in message and ":p@" not in message


def test_migrations_use_a_direct_url_or_an_unpooled_database_url() -> None:
    pooled = migration_settings(database_url=NEON_POOLED, database_migration_url=NEON_DIRECT)
    assert pooled.migration_database.host == "ep-x-123.eu-central-1.aws.neon.tech"
    # A Neon pooled host declared otherwise is the operator's call.
    declared = migration_settings(database_url=NEON_POOLED, database_transaction_pooler=False)
    assert declared.migration_database.host == "ep-x-123-pooler.eu-central-1.aws.neon.tech"
    assert migration_settings(database_url="postgres://u@h/db").migration_database.host == "h"


def test_the_migration_lock_wait_is_bounded() -> None:
    assert (
        migration_settings(database_url="postgres://u@h/db").database_migration_lock_timeout_seconds
        == 60
    )
    with pytest.raises(ValidationError) as caught:
        migration_settings(
            database_url="postgres://u@h/db", database_migration_lock_timeout_seconds=0
        )
    assert describe_settings_error(caught.value).startswith(
        "invalid configuration: DATABASE_MIGRATION_LOCK_TIMEOUT_SECONDS: "
    )


def test_transaction_pooler_detected_from_neon_pooled_host_or_set_explicitly() -> None:
    neon = "postgres://u:p@ep-cool-name-123-pooler.eu-central-1.aws.neon.tech/db?sslmode=require"
    assert settings(database_url=neon).uses_transaction_pooler
    assert not settings().uses_transaction_pooler
    assert settings(database_transaction_pooler=True).uses_transaction_pooler
    assert not settings(
        database_url=neon, database_transaction_pooler=False
    ).uses_transaction_pooler


def test_migrations_use_the_direct_url_when_given() -> None:
    pooled = settings(
        database_url="postgres://u@ep-x-pooler.neon.tech/db",
        database_migration_url="postgres://u@ep-x.neon.tech/db",
    )
    assert pooled.migration_database.host == "ep-x.neon.tech"
    assert settings().migration_database.host == "h"


def test_the_pool_check_threshold_is_seconds_and_zero_means_always() -> None:
    assert settings().database_pool_check_idle_seconds == 30.0
    assert settings(database_pool_check_idle_seconds="0").database_pool_check_idle_seconds == 0.0
    with pytest.raises(ValidationError):
        settings(database_pool_check_idle_seconds=-1)
    # The round trip before every checkout it replaces is gone, not silently ignored.
    assert "database_pool_pre_ping" not in ServiceSettings.model_fields


PASSWORD = "Sup3rSecretPassw0rd"


@pytest.mark.parametrize("service", ["auth", "tasks"])
def test_a_service_with_a_bad_configuration_exits_with_one_line_and_no_secret(
    service: str,
) -> None:
    environment = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": f"postgresq://taskstack:{PASSWORD}@db.example/taskstack",
        "JWKS_URL": "http://127.0.0.1:9/.well-known/jwks.json",
    }
    factory = f"taskstack.{service}.main:create_app"
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--port", "0"]
    result = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"taskstack-{service}: invalid configuration: DATABASE_URL: ")
    output = result.stdout + result.stderr
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert "input_value" not in output
