"""Accounts auth has closed: applying its events, and the deny list every replica keeps.

auth pushes each event (deleted, disabled, enabled) until it is acknowledged,
so an event may arrive twice, late, or after a later one. ``apply`` therefore
takes the account's row with FOR UPDATE and acts only on an event newer than
the last one applied; a deletion purges every task, idempotency record and
quota count of the account in the same transaction. Every replica refuses
the access tokens of a closed account: the one that applied the event at
once, the others within ``DENY_LIST_REFRESH_SECONDS`` (they read the rows
changed since their last look). The check on the request path is a lookup in
the in-memory set; the database is read only by the background refresh.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert

from taskstack.common.db import Database, Statement, execute, fetch_all, fetch_one
from taskstack.tasks.metrics import ACCOUNT_EVENTS
from taskstack.tasks.models import (
    AccountEvent,
    closed_account_table,
    idempotency_key_table,
    task_count_table,
    task_table,
)

logger = logging.getLogger(__name__)

DENY_LIST_REFRESH_SECONDS = 1.0
REREAD_MARGIN = timedelta(minutes=1)
CLOSED = frozenset({"deleted", "disabled"})

closed = closed_account_table.c
_LAST_APPLIED = Statement.of(
    select(closed.event_id).where(closed.user_id == bindparam("user_id")).with_for_update()
)
_RECORD = Statement.of(
    insert(closed_account_table)
    .values(
        user_id=bindparam("user_id"),
        event_id=bindparam("event_id"),
        kind=bindparam("kind"),
        changed_at=bindparam("now"),
    )
    .on_conflict_do_update(
        index_elements=[closed.user_id],
        set_={
            "event_id": bindparam("event_id"),
            "kind": bindparam("kind"),
            "changed_at": bindparam("now"),
        },
    )
)
_PURGE_TASKS = Statement.of(delete(task_table).where(task_table.c.owner_id == bindparam("user_id")))
_PURGE_KEYS = Statement.of(
    delete(idempotency_key_table).where(idempotency_key_table.c.owner_id == bindparam("user_id"))
)
_PURGE_COUNT = Statement.of(
    delete(task_count_table).where(task_count_table.c.owner_id == bindparam("user_id"))
)
_CHANGED_SINCE = Statement.of(
    select(closed.user_id, closed.kind, closed.changed_at).where(
        closed.changed_at >= bindparam("since")
    )
)


@dataclass
class DenyList:
    """The subjects whose access tokens are refused; ``refresh`` keeps it current."""

    database: Database
    subjects: set[uuid.UUID] = field(default_factory=set)
    _since: datetime = datetime(1970, 1, 2, tzinfo=UTC)

    def __contains__(self, subject: object) -> bool:
        return subject in self.subjects

    def note(self, user_id: uuid.UUID, kind: str) -> None:
        if kind in CLOSED:
            self.subjects.add(user_id)
        else:
            self.subjects.discard(user_id)

    async def refresh(self) -> None:
        async with self.database.read() as connection:
            # Re-read a margin of rows: a transaction that committed late may carry a
            # changed_at earlier than rows already seen. A row is the account's current
            # state, so reading it again is harmless.
            since = self._since - REREAD_MARGIN
            rows = await fetch_all(connection, _CHANGED_SINCE, {"since": since})
        for user_id, kind, changed_at in rows:
            self.note(user_id, kind)
            self._since = max(self._since, changed_at)

    @contextlib.asynccontextmanager
    async def kept_current(self) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception:
                    logger.warning("deny list refresh failed", exc_info=True)
                await asyncio.sleep(DENY_LIST_REFRESH_SECONDS)

        await self.refresh()
        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def apply(database: Database, deny_list: DenyList, event: AccountEvent) -> bool:
    """Apply ``event`` once; False when it (or a later one) was applied already."""
    values = {"user_id": event.user_id}
    async with database.write() as connection:
        row = await fetch_one(connection, _LAST_APPLIED, values)
        if row is not None and row[0] >= event.id:
            ACCOUNT_EVENTS.labels(event.kind, "duplicate").inc()
            return False
        # The row's time is taken inside the lock, so replicas reading rows changed
        # since their last look see the events of one account in their order.
        now = datetime.now(UTC)
        await execute(
            connection,
            _RECORD,
            {"user_id": event.user_id, "event_id": event.id, "kind": event.kind, "now": now},
        )
        purged = 0
        if event.kind == "deleted":
            purged = await execute(connection, _PURGE_TASKS, values)
            await execute(connection, _PURGE_KEYS, values)
            await execute(connection, _PURGE_COUNT, values)
    deny_list.note(event.user_id, event.kind)
    ACCOUNT_EVENTS.labels(event.kind, "applied").inc()
    logger.info(
        "account event applied",
        extra={
            "user_id": str(event.user_id),
            "kind": event.kind,
            "event_id": event.id,
            "tasks_deleted": purged,
        },
    )
    return True
