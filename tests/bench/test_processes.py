"""A benchmark server says what it logged: the lines a failed scenario's report quotes."""

import subprocess
from pathlib import Path

from taskstack.bench.processes import Server


def test_a_server_quotes_its_last_log_lines(tmp_path: Path) -> None:
    log = tmp_path / "tasks.log"
    log.write_text(
        '{"level": "WARNING", "message": "database not reachable yet"}\n\n'
        '{"level": "WARNING", "message": "shedding load"}\n'
        '{"level": "ERROR", "message": "unhandled error"}\n'
    )
    process = subprocess.Popen(["true"])  # a process for the dataclass only
    process.wait()
    server = Server("tasks", process, 0, log)
    assert server.warnings(2) == [
        '{"level": "WARNING", "message": "shedding load"}',
        '{"level": "ERROR", "message": "unhandled error"}',
    ]
    assert len(server.warnings(5)) == 3  # blank lines are not quoted
