"""The system programs the suite runs (scripts/test-tools), and one clear failure without one.

``uv run pytest`` never installs anything: a test that needs a program that
is missing fails with a single line naming the program and the command that
provides it, and every other test still runs. ``scripts/test`` installs them.
"""

import functools
import os
import shutil
from pathlib import Path

import pytest

TOOLS_FILE = Path(__file__).parents[2] / "scripts" / "test-tools"
# Debian installs servers in /usr/sbin, which an ordinary user's PATH may lack.
SYSTEM_DIRS = ("/usr/sbin", "/sbin")


@functools.cache
def packages() -> dict[str, str]:
    """Each program the suite runs → the Debian package that provides it."""
    found = {}
    for line in TOOLS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            program, package = line.split()
            found[program] = package
    return found


def require(program: str) -> str:
    """The path of ``program``; when it is missing, the calling test fails saying how to get it."""
    package = packages()[program]
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SYSTEM_DIRS])
    path = shutil.which(program, path=search)
    if path is None:
        pytest.fail(
            f"{program} is not installed: run scripts/test, which installs it, "
            f"or: sudo apt-get install -y {package}",
            pytrace=False,
        )
    return path
