"""`taskstack-auth-migrate`: bring schema "auth" to head (run by the deploy job, not by pods)."""

from taskstack.auth.models import SCHEMA
from taskstack.common.migrations import MigrationHistory, migrate_main

HISTORY = MigrationHistory(schema=SCHEMA, script_location="taskstack.auth:migrations")


def main() -> None:
    migrate_main(HISTORY)
