"""`taskstack-tasks-migrate`: bring schema "tasks" to head (run by the deploy job, not by pods)."""

from taskstack.common.migrations import MigrationHistory, migrate_main
from taskstack.tasks.models import SCHEMA

HISTORY = MigrationHistory(schema=SCHEMA, script_location="taskstack.tasks:migrations")


def main() -> None:
    migrate_main(HISTORY)
