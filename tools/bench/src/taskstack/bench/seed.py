"""A realistic data set, written with COPY: users with real bcrypt hashes, skewed task counts.

Task counts per user follow a Zipf-like curve (the n-th busiest user has about
1/n of the busiest one's tasks), so a few users have thousands of tasks and
most have tens; every user has more than one page. One password is hashed once
with the auth service's own hasher and the hash is shared by every user, so
seeding costs one bcrypt, yet every sign-in verifies a real hash.
"""

import asyncio
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy.engine import URL

from taskstack.auth.passwords import PasswordHasher
from taskstack.bench.database import libpq
from taskstack.common.models import new_id

PASSWORD = "bench correct horse battery staple"
MIN_TASKS_PER_USER = 21  # a full first page and a next cursor for everyone
TAGS = (
    "work",
    "home",
    "errands",
    "urgent",
    "health",
    "finance",
    "reading",
    "travel",
    "garden",
    "family",
    "project-x",
    "later",
)
_VERBS = ("Write", "Review", "Call", "Buy", "Fix", "Plan", "Book", "Send", "Clean", "Read")
_NOUNS = ("report", "invoice", "dentist", "groceries", "bike", "trip", "slides", "email", "car")
_TASK_COLUMNS = (
    "id, owner_id, title, description, completed, completed_at, priority, due_at, tags, "
    "created_at, updated_at, version"
)


@dataclass(frozen=True)
class SeededUser:
    id: uuid.UUID
    email: str
    tasks: int


@dataclass(frozen=True)
class DataSet:
    users: list[SeededUser]
    password: str

    @property
    def tasks(self) -> int:
        return sum(user.tasks for user in self.users)


def task_counts(users: int, tasks: int) -> list[int]:
    """Per-user task counts summing to ``tasks``, busiest first."""
    if tasks < users * MIN_TASKS_PER_USER:
        raise ValueError(f"{tasks} tasks is too few for {users} users")
    weights = [1 / rank for rank in range(1, users + 1)]
    spare = tasks - users * MIN_TASKS_PER_USER
    counts = [MIN_TASKS_PER_USER + int(spare * w / sum(weights)) for w in weights]
    counts[0] += tasks - sum(counts)
    return counts


def password_hash(*, pepper: str, cost: int) -> str:
    hasher = PasswordHasher(pepper=pepper, cost=cost, concurrency=1, queue_limit=0)
    return asyncio.run(hasher.hash(PASSWORD))


def seed(database: URL, *, users: int, tasks: int, hashed: str | None, seed: int = 1) -> DataSet:
    """Fill ``database`` (migrated, empty); ``hashed=None`` leaves auth's tables empty."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    now = datetime.now(UTC)
    seeded = [
        SeededUser(new_id(), f"user{i}@bench.example", count)
        for i, count in enumerate(task_counts(users, tasks))
    ]
    with psycopg.connect(libpq(database)) as conn:
        if hashed is not None:
            with conn.cursor().copy(
                'COPY auth."user" (id, email, password_hash, created_at, updated_at, version) '
                "FROM STDIN"
            ) as copy:
                for user in seeded:
                    copy.write_row((user.id, user.email, hashed, now, now, 1))
        with conn.cursor().copy(f"COPY tasks.task ({_TASK_COLUMNS}) FROM STDIN") as copy:
            for user in seeded:
                for row in _tasks(rng, user, now):
                    copy.write_row(row)
        # What the API keeps per owner for the quota (COPY bypasses the statements
        # that keep it), so deletes and creates in the load count from the truth.
        conn.execute(
            "INSERT INTO tasks.task_count (owner_id, tasks) "
            "SELECT owner_id, count(*) FROM tasks.task GROUP BY owner_id "
            "ON CONFLICT (owner_id) DO UPDATE SET tasks = excluded.tasks"
        )
        conn.commit()
        conn.autocommit = True
        # Statistics and the visibility map as a long-running database has them.
        conn.execute("VACUUM (ANALYZE) tasks.task")
        conn.execute('VACUUM (ANALYZE) auth."user"')
    return DataSet(seeded, PASSWORD)


def _tasks(rng: random.Random, user: SeededUser, now: datetime) -> Iterator[tuple[object, ...]]:
    for n in range(user.tasks):
        created = now - timedelta(seconds=rng.randrange(1, 365 * 86400))
        completed = rng.random() < 0.3
        completed_at = created + timedelta(hours=rng.randrange(1, 24 * 30)) if completed else None
        if completed_at is not None and completed_at > now:
            completed_at = now
        due = now + timedelta(days=rng.uniform(-30, 90)) if rng.random() < 0.6 else None
        description = (
            f"Notes for task {n}: {rng.choice(_NOUNS)} before {rng.choice(_NOUNS)}."
            if rng.random() < 0.4
            else None
        )
        yield (
            new_id(),
            user.id,
            f"{rng.choice(_VERBS)} the {rng.choice(_NOUNS)} #{n}",
            description,
            completed,
            completed_at,
            rng.choices((0, 1, 2), weights=(25, 55, 20))[0],
            due,
            rng.sample(TAGS, rng.choice((0, 1, 1, 2, 2, 3))),
            created,
            completed_at or created,
            2 if completed else 1,
        )
