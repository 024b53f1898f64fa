import os
import subprocess
import sys

import pytest
from pydantic import SecretStr, ValidationError

from taskstack.common.settings import (
    DEVELOPMENT_SECRET_MARKER,
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
