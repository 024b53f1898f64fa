"""The tasks service's settings: defaults, and no development cursor secret in production."""

import pytest
from pydantic import ValidationError

from taskstack.common.settings import describe_settings_error
from taskstack.tasks.config import TasksSettings

BASE = {
    "database_url": "postgres://u@h/db?sslmode=verify-full&sslrootcert=system",
    "token_issuer": "https://taskstack.example",
}


def test_defaults() -> None:
    settings = TasksSettings.model_validate(BASE)
    assert settings.jwks_url == "http://127.0.0.1:8001/.well-known/jwks.json"
    assert settings.jwks_cache_seconds == 300
    assert settings.jwks_refetch_cooldown_seconds == 30
    assert settings.tasks_idempotency_hours == 24


def test_production_refuses_the_development_cursor_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        TasksSettings.model_validate({**BASE, "environment": "production"})
    message = describe_settings_error(caught.value)
    assert "TASKS_CURSOR_SECRET holds a development secret" in message
    production = TasksSettings.model_validate(
        {**BASE, "environment": "production", "tasks_cursor_secret": "a-real-secret-of-32-bytes!!"}
    )
    assert production.tasks_cursor_secret.get_secret_value().startswith("a-real")


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/db")
    monkeypatch.setenv("JWKS_URL", "http://auth:8000/.well-known/jwks.json")
    monkeypatch.setenv("TASKS_CURSOR_SECRET", "from-the-environment-0123456789")
    monkeypatch.setenv("TASKS_IDEMPOTENCY_HOURS", "48")
    settings = TasksSettings()
    assert settings.jwks_url == "http://auth:8000/.well-known/jwks.json"
    assert settings.tasks_cursor_secret.get_secret_value() == "from-the-environment-0123456789"
    assert settings.tasks_idempotency_hours == 48


def test_idempotency_keys_are_kept_at_least_a_day() -> None:
    with pytest.raises(ValidationError):
        TasksSettings.model_validate({**BASE, "tasks_idempotency_hours": 23})


def test_a_short_cursor_secret_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        TasksSettings.model_validate({**BASE, "tasks_cursor_secret": "short"})
    message = describe_settings_error(caught.value)
    assert message == "invalid configuration: TASKS_CURSOR_SECRET: must be at least 16 bytes"
