"""The alert rules under promtool: valid, and firing exactly as their unit tests expect."""

import subprocess
from pathlib import Path

from tests.support.tools import require

OBSERVABILITY = Path(__file__).parent.parent.parent / "deploy/observability"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], capture_output=True, text=True, cwd=OBSERVABILITY, check=False
    )


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", *map(str, sorted(OBSERVABILITY.glob("rules/*.yaml"))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 24 rules found" in result.stdout


def test_rules_fire_as_their_unit_tests_expect() -> None:
    result = promtool("test", "rules", *map(str, sorted(OBSERVABILITY.glob("tests/*.yaml"))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
