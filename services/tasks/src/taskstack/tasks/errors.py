"""Every error the tasks service answers with, each carrying its status."""

from taskstack.common.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    TooManyRequests,
    UnprocessableContent,
)
from taskstack.tasks.etags import etag


class TaskNotFound(NotFound):
    # Another user's task is not found either: a 404 never confirms that an id exists.
    default_detail = "No task with this id."


class StaleTask(PreconditionFailed):
    """If-Match named another version than the task's current one; nothing changed."""

    def __init__(self, current_version: int) -> None:
        super().__init__(
            "The task has changed since the ETag in If-Match; fetch it again.",
            headers={"ETag": etag(current_version)},
        )


class InvalidCursor(BadRequest):
    default_detail = "The cursor is not valid for this query; start again without `cursor`."


class IdempotencyKeyInFlight(Conflict):
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."


class IdempotencyKeyReused(UnprocessableContent):
    default_detail = "This Idempotency-Key was already used with a different request body."


class BulkDeleteNeedsCompleted(UnprocessableContent):
    default_detail = "Only completed=true is supported for bulk deletion."


class TaskQuotaExceeded(Forbidden):
    """The owner holds as many tasks as the quota allows (decision 0015: 403, not 409,
    because retrying the same request never helps and no other answer of POST is a 403)."""

    def __init__(self, quota: int) -> None:
        super().__init__(
            f"You have reached the limit of {quota} tasks; delete some to create more."
        )


class RateLimited(TooManyRequests):
    """The owner has used this window's requests; every header says when it ends."""

    def __init__(self, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(
            "Too many requests for this user; retry after `Retry-After` seconds.",
            retry_after=retry_after,
        )
        self.headers.update(headers)
