"""The tasks service's own Prometheus metrics (no labels: no user or task id ever)."""

from prometheus_client import Counter

from taskstack.tasks.encoding import EncodedTask

TASKS_CREATED = Counter("taskstack_tasks_created", "Tasks created.")
TASKS_COMPLETED = Counter("taskstack_tasks_completed", "Tasks that became completed.")
TASKS_DELETED = Counter("taskstack_tasks_deleted", "Tasks deleted, one by one or in bulk.")


def count_completion(written: EncodedTask) -> None:
    if written.just_completed:
        TASKS_COMPLETED.inc()


ACCOUNT_EVENTS = Counter(
    "taskstack_tasks_account_events",
    "Account events from auth, by kind (deleted, disabled, enabled) and result "
    "(applied, duplicate: an event delivered again).",
    ["kind", "result"],
)
