"""The tasks service's own Prometheus metrics (no labels: no user or task id ever)."""

from prometheus_client import Counter

from taskstack.tasks.encoding import EncodedTask

TASKS_CREATED = Counter("taskstack_tasks_created", "Tasks created.")
TASKS_COMPLETED = Counter("taskstack_tasks_completed", "Tasks that became completed.")
TASKS_DELETED = Counter("taskstack_tasks_deleted", "Tasks deleted, one by one or in bulk.")
QUOTA_REFUSALS = Counter(
    "taskstack_tasks_quota_refusals", "Creates refused because the user's task quota was full."
)
RATE_LIMITED = Counter(
    "taskstack_tasks_rate_limited", "Requests refused with 429 by the per-user rate limit."
)
RATE_LIMIT_SYNC_FAILURES = Counter(
    "taskstack_tasks_rate_limit_sync_failures",
    "Rate-limit counts not shared with the other replicas (database unreachable): "
    "each replica then limits on its own counts alone.",
)


def count_completion(written: EncodedTask) -> None:
    if written.just_completed:
        TASKS_COMPLETED.inc()


ACCOUNT_EVENTS = Counter(
    "taskstack_tasks_account_events",
    "Account events from auth, by kind (deleted, disabled, enabled) and result "
    "(applied, duplicate: an event delivered again).",
    ["kind", "result"],
)
