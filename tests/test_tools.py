"""The system programs the suite runs: listed once, each missing one a single clear line."""

import ast
from pathlib import Path

import pytest

from tests.support import tools

TESTS = Path(__file__).parent


def required_programs() -> set[str]:
    """Every program a test or fixture asks ``require`` for."""
    found = set()
    for source in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "require"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.add(node.args[0].value)
    return found


def test_the_list_names_exactly_the_programs_the_tests_require() -> None:
    assert required_programs() == set(tools.packages())


def test_a_missing_program_fails_the_test_with_one_line_saying_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "SYSTEM_DIRS", ())
    with pytest.raises(pytest.fail.Exception) as failed:
        tools.require("promtool")
    assert str(failed.value) == (
        "promtool is not installed: run scripts/test, which installs it, "
        "or: sudo apt-get install -y prometheus"
    )
    assert not failed.value.pytrace


def test_a_program_is_found_on_the_path_or_in_the_system_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path, system = tmp_path / "bin", tmp_path / "sbin"
    for directory, program in ((on_path, "wrk"), (system, "nginx")):
        directory.mkdir()
        (directory / program).write_text("#!/bin/sh\n")
        (directory / program).chmod(0o700)
    monkeypatch.setenv("PATH", str(on_path))
    monkeypatch.setattr(tools, "SYSTEM_DIRS", (str(system),))
    assert tools.require("wrk") == str(on_path / "wrk")
    assert tools.require("nginx") == str(system / "nginx")
