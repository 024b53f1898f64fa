"""The tasks service's own Prometheus metrics (no labels: no user or task id ever)."""

from prometheus_client import Counter

from taskstack.tasks.models import TaskPublic

TASKS_CREATED = Counter("taskstack_tasks_created", "Tasks created.")
TASKS_COMPLETED = Counter("taskstack_tasks_completed", "Tasks that became completed.")
TASKS_DELETED = Counter("taskstack_tasks_deleted", "Tasks deleted, one by one or in bulk.")


def count_completion(written: TaskPublic) -> None:
    # completed_at is set to the transaction's now() only by the write that
    # completes the task, the same now() as updated_at.
    if written.completed and written.completed_at == written.updated_at:
        TASKS_COMPLETED.inc()
