"""Client-side tools of the fault and load tests: users, paced traffic, outcomes, DB locks.

Traffic is open-loop: request ``n`` starts at ``n / rate`` seconds whatever
happened to the earlier ones, so a stall in the stack shows up as latency
and errors, not as a client that politely slowed down. Every loop is bounded
in count and in time.
"""

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import psycopg
from sqlalchemy.engine import URL

from taskstack.common.jwks import retry_after_seconds, retry_wait
from tests.e2e.harness import User

PROBLEM_JSON = "application/problem+json"
SERVICE_APPLICATION = {"auth": "taskstack-auth", "tasks": "taskstack-tasks"}


@dataclass
class Outcome:
    """One request as the client saw it; times in seconds since the traffic started."""

    kind: str
    started: float
    elapsed: float
    status: int  # 0: no HTTP answer at all (connection refused, reset, timeout)
    content_type: str = ""
    retry_after: str | None = None
    request_id: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 400

    @property
    def ended(self) -> float:
        return self.started + self.elapsed

    @property
    def is_retry_later_problem(self) -> bool:
        """A 503 the way the services give one: problem+json with Retry-After."""
        return (
            self.status == 503
            and self.content_type.startswith(PROBLEM_JSON)
            and self.retry_after is not None
            and self.retry_after.isdigit()
        )


def create_tasks(client: httpx.Client, user: User, titles: Sequence[str]) -> list[str]:
    """Create one task per title; their ids."""
    ids = []
    for title in titles:
        response = client.post("/v1/tasks", json={"title": title}, headers=user.headers)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    return ids


async def timed(
    client: httpx.AsyncClient,
    kind: str,
    started_at: float,
    request: Awaitable[httpx.Response],
    inspect: Callable[[httpx.Response], None] | None = None,
) -> Outcome:
    """Await ``request`` and describe how it went; ``started_at`` is the traffic's origin.

    ``inspect`` sees the response (to keep an id or a token from it).
    """
    started = time.monotonic()
    try:
        response = await request
    except httpx.HTTPError as exc:
        return Outcome(kind, started - started_at, time.monotonic() - started, 0, error=repr(exc))
    elapsed = time.monotonic() - started
    if inspect is not None:
        inspect(response)
    return Outcome(
        kind,
        started - started_at,
        elapsed,
        response.status_code,
        response.headers.get("content-type", ""),
        response.headers.get("retry-after"),
        response.headers.get("x-request-id", ""),
    )


async def keyed_create(
    client: httpx.AsyncClient, started_at: float, headers: dict[str, str], key: str
) -> Outcome:
    """Create a task titled ``key`` with ``key`` as its Idempotency-Key (safe to retry)."""
    return await timed(
        client,
        "create",
        started_at,
        client.post("/v1/tasks", json={"title": key}, headers={**headers, "Idempotency-Key": key}),
    )


async def honouring_retry_after(
    send: Callable[[], Awaitable[Outcome]],
    *,
    attempts: int = 6,
    within: float = 30.0,
    jitter: Callable[[float, float], float] = random.uniform,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Outcome]:
    """Send, and send again after Retry-After times U(1, 2) (see ``retry_wait``) while the
    answer is a 503 with a readable Retry-After: as a well-behaved client does.

    At most ``attempts`` sends, and no wait that would end past ``within`` seconds
    from the first; every attempt's Outcome, in order (the last is the answer kept).
    ``send`` must be safe to repeat: a read, or a write with its Idempotency-Key.
    """
    started = time.monotonic()
    outcomes = [await send()]
    while len(outcomes) < attempts and outcomes[-1].status == 503:
        asked = retry_after_seconds(outcomes[-1].retry_after)
        if asked is None:
            break
        wait = retry_wait(asked, jitter=jitter)
        if time.monotonic() + wait - started > within:
            break
        await sleep(wait)
        outcomes.append(await send())
    return outcomes


@dataclass
class Traffic:
    """Paced requests: ``send(client, n)`` issues request ``n`` and returns its Outcome."""

    rate: float
    duration: float
    send: Callable[[httpx.AsyncClient, int, float], Awaitable[Outcome]]
    timeout: float = 30.0
    max_in_flight: int = 200
    outcomes: list[Outcome] = field(default_factory=list)

    async def run(self, client: httpx.AsyncClient, origin: float | None = None) -> list[Outcome]:
        origin = time.monotonic() if origin is None else origin
        total = int(self.rate * self.duration)
        in_flight = asyncio.Semaphore(self.max_in_flight)

        async def one(n: int) -> None:
            async with in_flight:
                self.outcomes.append(await self.send(client, n, origin))

        async with asyncio.timeout(self.duration + self.timeout + 10), asyncio.TaskGroup() as group:
            for n in range(total):
                delay = origin + n / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                group.create_task(one(n))
        self.outcomes.sort(key=lambda outcome: outcome.started)
        return self.outcomes


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank; 0 for none."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(max(int(q), 1), 99) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


@contextlib.contextmanager
def locked(database: str, statement: str, *params: object) -> Iterator[psycopg.Connection]:
    """Hold the locks ``statement`` takes (in an open transaction) until the block ends."""
    with psycopg.connect(database, connect_timeout=5, application_name="e2e-lock") as conn:
        conn.execute(statement, params or None)
        try:
            yield conn
        finally:
            conn.rollback()


def libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def connections(database: str, url: URL, service: str, *, waiting: bool = False) -> int:
    """The service's connections to ``url``'s database (``waiting``: those blocked on a lock)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
        " AND (NOT %s OR wait_event_type = 'Lock')"
    )
    with psycopg.connect(database, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(query, (url.database, SERVICE_APPLICATION[service], waiting)).fetchone()
    return int(row[0]) if row else 0


def wait_for(
    condition: Callable[[], bool], *, within: float, interval: float = 0.05, what: str = ""
) -> float:
    """Seconds until ``condition()`` held; fails the test after ``within`` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within:g} s: {what}")
        time.sleep(interval)
    return time.monotonic() - started
