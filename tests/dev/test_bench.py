"""`taskstack bench --smoke`: every scenario runs end to end, error-free, in seconds."""

import json
import subprocess
import sys
from pathlib import Path

from taskstack.dev.bench.runner import SCENARIOS
from tests.support.postgres import PostgresServer

TASKSTACK = str(Path(sys.executable).with_name("taskstack"))
STORM = ("storm-login", "storm-jwks", "storm-refresh")


def test_smoke_run_measures_every_scenario_without_errors(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [
            TASKSTACK,
            "bench",
            "--smoke",
            "--database-url",
            postgres.libpq(postgres.url),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    report = json.loads(output.read_text())
    expected = [name for name in SCENARIOS if name != "storm"] + list(STORM)
    assert list(report["scenarios"]) == expected
    for name, scenario in report["scenarios"].items():
        assert scenario["requests"] > 0, name
        assert scenario["errors"] == 0, (name, scenario["statuses"])
        assert scenario["latency_ms"]["p99"] >= scenario["latency_ms"]["p50"] > 0, name
    assert report["failures"] == []
    assert report["scenarios"]["list"]["vs_livez"] > 0
    assert report["scenarios"]["list"]["vs_raw_floor"] > 0
    assert set(report["rss_mb"]) == {"auth", "tasks", "tasks-2k", "floor"}
    assert {target["name"] for target in report["targets"]} >= {
        "list first page vs /livez",
        "first page, 200,000 tasks vs 2,000",
        "refresh p99 during the login storm",
    }
    # The table and the targets are printed, one line per scenario and per target.
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["scenario", "conns", "req/s"] for line in lines)
    for name in expected:
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert any(line.strip().startswith(("PASS", "MISS")) for line in lines)


def test_bench_refuses_an_unknown_scenario() -> None:
    result = subprocess.run(
        [TASKSTACK, "bench", "--only", "list,nonsense"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown scenario nonsense" in result.stderr
