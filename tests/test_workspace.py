"""The workspace's boundaries: a service never imports the other, the library neither;
the tools import the services, never the other way round."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = {
    "common": ROOT / "libs/common/src/taskstack/common",
    "dev": ROOT / "tools/dev/src/taskstack/dev",
    "bench": ROOT / "tools/bench/src/taskstack/bench",
    "auth": ROOT / "services/auth/src/taskstack/auth",
    "tasks": ROOT / "services/tasks/src/taskstack/tasks",
}
MAY_IMPORT = {
    "common": {"common"},
    "auth": {"common", "auth"},
    "tasks": {"common", "tasks"},
    "dev": {"common", "auth", "tasks", "dev"},
    "bench": {"common", "auth", "tasks", "dev", "bench"},
}


def taskstack_imports(package: Path) -> set[str]:
    found = set()
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found |= {name.split(".")[1] for name in names if name.startswith("taskstack.")}
    return found


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_package_imports_only_what_it_may(name: str) -> None:
    imported = taskstack_imports(PACKAGES[name])
    assert name in imported  # the scan sees the package's own imports
    assert imported <= MAY_IMPORT[name], imported - MAY_IMPORT[name]
