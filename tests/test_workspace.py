"""The workspace's boundaries: a service never imports the other, the library neither;
the tools import the services, never the other way round."""

import ast
import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

from taskstack.common import db
from taskstack.common.db import Database

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


# ---- one transaction vocabulary (taskstack.common.db: Database.read(), .write(), .single_write())

SERVICE_SOURCES = sorted(
    path
    for root in (ROOT / "services", ROOT / "libs/common/src")
    for path in root.rglob("*.py")
    # The vocabulary itself, and Alembic's runner, which owns its connection.
    if path.name not in ("db.py", "migrations.py") and "migrations" not in path.parts
)
OPENS_A_TRANSACTION = {"commit", "rollback", "begin", "transaction", "connect", "getconn"}
OPENS_A_CONNECTION = {
    "AsyncSession",
    "Session",
    "sessionmaker",
    "create_engine",
    "create_async_engine",
}
TRANSACTION_STATEMENTS = {"BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION"}


def transaction_escapes(source: Path) -> list[str]:
    """Every place ``source`` opens a connection or a transaction other than through a
    Database block."""
    found = []
    for node in ast.walk(ast.parse(source.read_text())):
        shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
        where = f"{shown}:{getattr(node, 'lineno', '?')}"
        name = node.name.rsplit(".", 1)[-1] if isinstance(node, ast.alias) else None
        if isinstance(node, ast.Attribute) and node.attr in OPENS_A_TRANSACTION:
            found.append(f"{where} .{node.attr}()")
        elif isinstance(node, ast.Name) and node.id in OPENS_A_CONNECTION:
            found.append(f"{where} {node.id}")
        elif name in OPENS_A_CONNECTION:
            found.append(f"{where} {name}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.strip().upper() in TRANSACTION_STATEMENTS
        ):
            found.append(f"{where} {node.value!r}")
    return found


def test_services_open_transactions_only_through_database_blocks() -> None:
    escapes = [escape for source in SERVICE_SOURCES for escape in transaction_escapes(source)]
    assert escapes == []


VOCABULARY = {"read", "write", "single_write"}


def _opens_a_block(method: Any) -> bool:
    """Whether ``method`` gives an ``async with`` block: a generator-based context
    manager, or an object with ``__aenter__``."""
    if inspect.isasyncgenfunction(getattr(method, "__wrapped__", None)):
        return True
    return hasattr(typing.get_type_hints(method).get("return"), "__aenter__")


def test_the_vocabulary_is_three_blocks() -> None:
    """Database's public blocks are exactly the verbs db.py's docstring table lists."""
    blocks = {
        name
        for name, member in vars(Database).items()
        if not name.startswith("_") and inspect.isfunction(member) and _opens_a_block(member)
    }
    assert blocks == VOCABULARY
    table = (db.__doc__ or "").split("\n\n", 2)[2]
    assert {verb for verb in VOCABULARY if f"database.{verb}()" in table} == VOCABULARY


def test_the_check_sees_a_transaction_opened_another_way(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from sqlalchemy.ext.asyncio import AsyncSession\n"
        "async def f(connection):\n"
        "    await connection.execute('BEGIN')\n"
        "    await connection.commit()\n"
    )
    found = {escape.split(" ", 1)[1] for escape in transaction_escapes(sample)}
    assert found == {"AsyncSession", "'BEGIN'", ".commit()"}


def test_routes_never_touch_the_database() -> None:
    for service in ("auth", "tasks"):
        package = ROOT / f"services/{service}/src/taskstack/{service}"
        for module in ("routes.py", "dependencies.py"):
            tree = ast.parse((package / module).read_text())
            imported = {
                node.module
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module
            }
            assert "taskstack.common.db" not in imported, f"{service}/{module}"
