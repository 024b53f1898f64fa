"""What the task endpoints do, each in one database block: no FastAPI here.

A read runs in a read block (autocommit: one statement, no BEGIN or COMMIT);
a write that is one statement (INSERT/UPDATE/DELETE ... RETURNING) in a
single-write block, which commits as it runs. A create with an
Idempotency-Key claims the key, creates the task and stores the answer in
one transaction, a write block (see ``idempotency``). Every write has
committed before the answer is built.
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from taskstack.common.db import Database
from taskstack.tasks import accounts, idempotency, repository
from taskstack.tasks.accounts import DenyList
from taskstack.tasks.cursor import CursorCodec
from taskstack.tasks.encoding import EncodedPage, EncodedTask
from taskstack.tasks.errors import BulkDeleteNeedsCompleted, TaskQuotaExceeded
from taskstack.tasks.etags import EntityTags, etag
from taskstack.tasks.idempotency import IdempotentRequest, StoredResponse
from taskstack.tasks.listing import TaskListParams, list_tasks
from taskstack.tasks.metrics import (
    QUOTA_REFUSALS,
    TASKS_CREATED,
    TASKS_DELETED,
    count_completion,
)
from taskstack.tasks.models import API_PREFIX, AccountEvent, TaskCreate, TaskUpdate


def task_headers(task: EncodedTask) -> dict[str, str]:
    return {"ETag": etag(task.version), "Location": f"{API_PREFIX}/{task.id}"}


@dataclass(frozen=True)
class TaskService:
    """The tasks service's logic and its collaborators, built once per process."""

    database: Database
    cursor_codec: CursorCodec
    idempotency_retention: timedelta
    # Tasks one owner may hold (TASKS_MAX_TASKS_PER_USER).
    quota: int
    deny_list: DenyList

    async def apply_account_event(self, event: AccountEvent) -> None:
        """Act on an account event from auth, once however often it is delivered."""
        await accounts.apply(self.database, self.deny_list, event)

    async def create(
        self, owner: uuid.UUID, data: TaskCreate, idempotency_key: str | None
    ) -> StoredResponse:
        """The 201 answer: a new task's, or, for a key seen before, the stored one."""
        keyed = IdempotentRequest.of(owner, idempotency_key, data) if idempotency_key else None
        # A keyed create claims its key, creates and remembers the answer in one
        # transaction; a plain one is a single INSERT.
        block = self.database.write() if keyed is not None else self.database.single_write()
        async with block as connection:
            if keyed is not None and (
                stored := await idempotency.replay_or_claim(connection, keyed)
            ):
                return stored
            try:
                row = await repository.create(connection, owner, data, self.quota)
            except TaskQuotaExceeded:
                QUOTA_REFUSALS.inc()
                raise
            task = EncodedTask.of(row)
            created = StoredResponse(201, task.body, task_headers(task))
            if keyed is not None:
                await idempotency.remember(
                    connection, keyed, created, keep_for=self.idempotency_retention
                )
        TASKS_CREATED.inc()
        count_completion(task)
        return created

    async def page(self, owner: uuid.UUID, params: TaskListParams) -> EncodedPage:
        async with self.database.read() as connection:
            return await list_tasks(connection, owner, params, self.cursor_codec)

    async def get(self, owner: uuid.UUID, task_id: uuid.UUID) -> EncodedTask:
        async with self.database.read() as connection:
            row = await repository.get(connection, owner, task_id)
        return EncodedTask.of(row)

    async def replace(
        self, owner: uuid.UUID, task_id: uuid.UUID, data: TaskCreate, if_match: EntityTags | None
    ) -> EncodedTask:
        return await self._update(owner, task_id, dict(data), if_match)

    async def update(
        self, owner: uuid.UUID, task_id: uuid.UUID, patch: TaskUpdate, if_match: EntityTags | None
    ) -> EncodedTask:
        return await self._update(owner, task_id, patch.changes(), if_match)

    async def _update(
        self,
        owner: uuid.UUID,
        task_id: uuid.UUID,
        changes: dict[str, Any],
        if_match: EntityTags | None,
    ) -> EncodedTask:
        versions = if_match.versions_for_if_match() if if_match is not None else None
        async with self.database.single_write() as connection:
            row = await repository.update_fields(connection, owner, task_id, changes, versions)
        task = EncodedTask.of(row)
        count_completion(task)
        return task

    async def delete(
        self, owner: uuid.UUID, task_id: uuid.UUID, if_match: EntityTags | None
    ) -> None:
        versions = if_match.versions_for_if_match() if if_match is not None else None
        async with self.database.single_write() as connection:
            await repository.delete_one(connection, owner, task_id, versions)
        TASKS_DELETED.inc()

    async def delete_completed(self, owner: uuid.UUID, completed: bool) -> int:
        if not completed:
            raise BulkDeleteNeedsCompleted()
        async with self.database.single_write() as connection:
            deleted = await repository.delete_completed(connection, owner)
        TASKS_DELETED.inc(deleted)
        return deleted
