"""docs/configuration.md documents every setting the services read, with its default."""

import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from taskstack.auth.config import AuthSettings
from taskstack.common.settings import MigrationSettings, ServiceSettings
from taskstack.dev.services import SERVER_OPTIONS
from taskstack.tasks.config import TasksSettings

PAGE = Path(__file__).parents[2] / "docs" / "configuration.md"
SETTINGS: list[type[BaseSettings]] = [
    ServiceSettings,
    MigrationSettings,
    AuthSettings,
    TasksSettings,
]
# Documented on the page but read by something other than the settings classes:
# uvicorn (FORWARDED_ALLOW_IPS, UVICORN_*), the test suite, the OpenTelemetry SDK.
READ_ELSEWHERE = {"FORWARDED_ALLOW_IPS", "TEST_DATABASE_URL"}

_ROW = re.compile(r"^\| `(?P<variable>[A-Z][A-Z0-9_]*)` \| (?P<default>[^|]*) \|", re.MULTILINE)
_CODE_SPAN = re.compile(r"`([^`]*)`")


def documented_defaults() -> dict[str, str]:
    """Each variable in the page's tables, and its default cell."""
    return {m["variable"]: m["default"].strip() for m in _ROW.finditer(PAGE.read_text())}


def written_default(default: Any) -> str | None:
    """How the page writes a literal default; None for a default it describes in words."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, int | str):
        return str(default)
    return None  # None, a secret, a list, a computed default


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.__name__)
def test_every_setting_is_documented_with_its_default(settings: type[BaseSettings]) -> None:
    documented = documented_defaults()
    for name, field in settings.model_fields.items():
        variable = name.upper()
        assert variable in documented, f"{variable} is missing from docs/configuration.md"
        cell = documented[variable]
        if field.is_required():
            assert cell == "(required)", variable
            continue
        assert cell, f"{variable} has no default in docs/configuration.md"
        literal = written_default(field.default)
        if literal is not None:
            first = _CODE_SPAN.search(cell)
            assert first is not None and first[1] == literal, (
                f"{variable}: documented default {cell!r}, the code's is {literal!r}"
            )


def test_every_documented_setting_exists() -> None:
    fields = {name.upper() for settings in SETTINGS for name in settings.model_fields}
    stale = {
        variable
        for variable in documented_defaults()
        if variable not in fields
        and variable not in READ_ELSEWHERE
        and not variable.startswith(("OTEL_", "UVICORN_"))
    }
    assert not stale, f"docs/configuration.md documents variables nothing reads: {stale}"


def test_the_uvicorn_rows_are_the_server_options() -> None:
    """Each `UVICORN_<OPTION>` row holds what SERVER_OPTIONS passes as --<option>."""
    documented = {
        variable: _CODE_SPAN.search(default)
        for variable, default in documented_defaults().items()
        if variable.startswith("UVICORN_")
    }
    options = dict(zip(SERVER_OPTIONS[::2], SERVER_OPTIONS[1::2], strict=True))
    wanted = {"UVICORN_" + option[2:].upper().replace("-", "_"): v for option, v in options.items()}
    assert {variable: span and span[1] for variable, span in documented.items()} == wanted
