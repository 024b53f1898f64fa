"""The per-user rate limit: windows, sharing counts through PostgreSQL, the 429, its headers.

The RateLimit objects here stand for replicas: each counts in memory and
flushes to the same real PostgreSQL table, on a clock the test moves.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from taskstack.common.db import Database as Pool
from taskstack.common.settings import ServiceSettings
from taskstack.tasks import ratelimit
from taskstack.tasks.errors import RateLimited
from taskstack.tasks.main import create_app
from taskstack.tasks.ratelimit import PURGE_BATCH, WINDOW_SECONDS, RateLimit
from tests.support.servers import serve
from tests.tasks.conftest import Api, Database, UserClient, both_entries, tasks_settings

T = TypeVar("T")

SHARED = "SELECT coalesce(sum(requests), 0) FROM tasks.rate_limit_window"
# A window's start, and a time 10 s into it.
WINDOW = 1_800_000_000.0 - 1_800_000_000.0 % WINDOW_SECONDS
INSIDE = WINDOW + 10


class Clock:
    def __init__(self, now: float = INSIDE) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pool(url: URL) -> Pool:
    settings = ServiceSettings.model_validate(
        {"database_url": url.render_as_string(hide_password=False), "database_pool_timeout": 2}
    )
    return Pool(settings, service="tasks")


def run(scenario: Callable[[Pool], Awaitable[T]], url: URL) -> T:
    async def with_pool() -> T:
        database = pool(url)
        try:
            return await scenario(database)
        finally:
            await database.close()

    return asyncio.run(with_pool())


def take_all(limit: RateLimit, owner: uuid.UUID, times: int) -> int:
    """How many of ``times`` requests ``limit`` admits."""
    admitted = 0
    for _ in range(times):
        try:
            limit.take(owner)
        except RateLimited:
            continue
        admitted += 1
    return admitted


def stored(db: Database) -> dict[tuple[datetime, uuid.UUID], int]:
    rows = db.rows("SELECT window_start, owner_id, requests FROM tasks.rate_limit_window")
    return {(start, owner): requests for start, owner, requests in rows}


def test_one_process_admits_the_limit_per_window_and_says_until_when(database_url: URL) -> None:
    clock = Clock()
    owner, other = uuid.uuid4(), uuid.uuid4()

    async def scenario(database: Pool) -> None:
        limit = RateLimit(database, limit=5, sync_seconds=1, clock=clock)
        assert take_all(limit, owner, 5) == 5
        with pytest.raises(RateLimited) as refused:
            limit.take(owner)
        assert refused.value.status_code == 429
        assert refused.value.headers == {
            "Retry-After": "50",
            "RateLimit-Policy": '"per-user";q=5;w=60',
            "RateLimit": '"per-user";r=0;t=50',
        }
        assert take_all(limit, other, 1) == 1, "another owner has a count of their own"
        clock.now = WINDOW + WINDOW_SECONDS - 0.2
        with pytest.raises(RateLimited) as refused:
            limit.take(owner)
        assert refused.value.headers["Retry-After"] == "1", "never 0: that reads as now"
        clock.now = WINDOW + WINDOW_SECONDS
        assert take_all(limit, owner, 6) == 5, "a new window starts from nothing"

    run(scenario, database_url)


def test_replicas_share_their_counts_through_one_row_per_owner_and_window(
    database_url: URL, db: Database
) -> None:
    clock = Clock()
    owner = uuid.uuid4()

    async def scenario(database: Pool) -> list[int]:
        a = RateLimit(database, limit=10, sync_seconds=1, clock=clock)
        b = RateLimit(database, limit=10, sync_seconds=1, clock=clock)
        admitted = [take_all(a, owner, 6)]
        await a.flush()
        admitted.append(take_all(b, owner, 3))
        await b.flush()  # b learns a's 6: 9 in all
        admitted.append(take_all(b, owner, 5))  # one more, then refused
        await b.flush()
        # a has not flushed since b's last requests: it admits one it would refuse
        # (the overshoot the docs bound: what another replica admitted in a sync)...
        admitted.append(take_all(a, owner, 1))
        await a.flush()  # ...and learns the total with its next flush: 11
        admitted.append(take_all(a, owner, 5))
        admitted.append(take_all(b, owner, 5))
        return admitted

    assert run(scenario, database_url) == [6, 3, 1, 1, 0, 0]
    start = datetime.fromtimestamp(WINDOW, UTC)
    assert stored(db) == {(start, owner): 11}


def test_requests_taken_while_a_flush_runs_are_neither_lost_nor_counted_twice(
    database_url: URL, db: Database
) -> None:
    clock = Clock()
    owner = uuid.uuid4()

    async def scenario(database: Pool) -> int:
        limit = RateLimit(database, limit=10, sync_seconds=1, clock=clock)
        take_all(limit, owner, 4)
        flushing = asyncio.create_task(limit.flush())
        await asyncio.sleep(0)
        assert not limit._pending, "the flush has taken its batch and waits for the database"
        take_all(limit, owner, 3)
        await flushing
        await limit.flush()
        admitted = take_all(limit, owner, 10)
        await limit.flush()
        return admitted

    assert run(scenario, database_url) == 3
    assert stored(db) == {(datetime.fromtimestamp(WINDOW, UTC), owner): 10}


def test_a_flush_with_nothing_new_writes_nothing(database_url: URL, db: Database) -> None:
    async def scenario(database: Pool) -> None:
        limit = RateLimit(database, limit=10, sync_seconds=1, clock=Clock())
        await limit.flush()

    run(scenario, database_url)
    assert stored(db) == {}


def test_past_windows_are_purged_in_bounded_batches(database_url: URL, db: Database) -> None:
    past = datetime.fromtimestamp(WINDOW - WINDOW_SECONDS, UTC)
    db.execute(
        "INSERT INTO tasks.rate_limit_window (window_start, owner_id, requests) "
        "SELECT %s, gen_random_uuid(), 1 FROM generate_series(1, %s)",
        past,
        PURGE_BATCH + 5,
    )
    owner = uuid.uuid4()

    async def scenario(database: Pool) -> list[int]:
        limit = RateLimit(database, limit=10, sync_seconds=1, clock=Clock())
        left = []
        for _ in range(3):
            take_all(limit, owner, 1)
            await limit.flush()
            left.append(int(db.scalar("SELECT count(*) FROM tasks.rate_limit_window")))
        return left

    # One batch, then the rest; the current window's row stays.
    assert run(scenario, database_url) == [5 + 1, 1, 1]
    assert list(stored(db)) == [(datetime.fromtimestamp(WINDOW, UTC), owner)]


def sync_failures() -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("taskstack_tasks_rate_limit_sync_failures_total")
    return value or 0.0


def test_an_unreachable_database_leaves_each_replica_limiting_on_its_own_counts(
    database_url: URL, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    owner = uuid.uuid4()
    unreachable = database_url.set(host="127.0.0.1", port=1)
    before = sync_failures()

    async def outage(database: Pool) -> list[int]:
        limit = RateLimit(database, limit=10, sync_seconds=1, clock=clock)
        admitted = [take_all(limit, owner, 4)]
        for _ in range(3):
            await limit.flush()  # never raises
        admitted.append(take_all(limit, owner, 10))
        return admitted

    with caplog.at_level(logging.INFO, logger=ratelimit.__name__):
        assert run(outage, unreachable) == [4, 6], "the process's own counts still limit"
    assert sync_failures() - before == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "logged once, not once per sync"

    async def recovered(database: Pool) -> None:
        limit = RateLimit(database, limit=10, sync_seconds=1, clock=clock)
        take_all(limit, owner, 2)
        limit._database = pool(unreachable)  # the outage
        await limit.flush()
        await limit._database.close()
        limit._database = database  # and its end: the kept counts go out with the next
        take_all(limit, owner, 1)
        await limit.flush()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ratelimit.__name__):
        run(recovered, database_url)
    assert stored(db) == {(datetime.fromtimestamp(WINDOW, UTC), owner): 3}
    assert "shared again" in caplog.text


def test_sharing_flushes_in_the_background_and_once_more_at_the_end(
    database_url: URL, db: Database
) -> None:
    owner = uuid.uuid4()

    async def scenario(database: Pool) -> list[int]:
        limit = RateLimit(database, limit=100, sync_seconds=0.05)
        seen = []
        async with limit.sharing():
            take_all(limit, owner, 3)
            await asyncio.sleep(0.3)
            seen.append(
                int(db.scalar("SELECT coalesce(sum(requests), 0) FROM tasks.rate_limit_window"))
            )
            take_all(limit, owner, 2)
        seen.append(int(db.scalar(SHARED)))
        return seen

    assert run(scenario, database_url) == [3, 5]


# ---- over HTTP, through both entries

LIMIT = 6


@both_entries
def tasks_front(request: pytest.FixtureRequest) -> bool:
    """The HTTP tests run against both entries: TaskFront and the FastAPI route."""
    return bool(request.param)


@pytest.fixture(scope="module")
def tasks_url(migrated_database: URL, jwks_url: str, tasks_front: bool) -> Iterator[str]:
    settings = tasks_settings(
        migrated_database,
        jwks_url,
        tasks_front=tasks_front,
        tasks_rate_limit_per_minute=LIMIT,
    )
    with serve(create_app(settings)) as base_url:
        yield base_url


def requests_of_every_kind(client: UserClient) -> Iterator[httpx.Response]:
    """Each operation once (all of what TaskFront answers, and what only the routes do)."""
    created = client.post("/v1/tasks", json={"title": "counted"})
    yield created
    task = created.json()["id"]
    yield client.get("/v1/tasks")
    yield client.get(f"/v1/tasks/{task}")
    yield client.patch(f"/v1/tasks/{task}", json={"completed": True})
    yield client.put(f"/v1/tasks/{task}", json={"title": "replaced"})
    yield client.delete(f"/v1/tasks/{task}")


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"].startswith("Too many requests for this user")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_SECONDS
    assert response.headers["RateLimit-Policy"] == f'"per-user";q={LIMIT};w={WINDOW_SECONDS}'
    assert response.headers["RateLimit"] == f'"per-user";r=0;t={retry_after}'


@pytest.fixture
def one_window() -> None:
    """The test's requests fall in one window (they take well under three seconds)."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < 3:
        time.sleep(left + 0.01)


@pytest.mark.usefixtures("one_window")
def test_every_operation_counts_and_the_next_one_is_a_429(alice: UserClient) -> None:
    answers = list(requests_of_every_kind(alice))
    assert [r.status_code for r in answers] == [201, 200, 200, 200, 200, 204]
    for refused in (
        alice.get("/v1/tasks"),
        alice.post("/v1/tasks", json={"title": "one too many"}),
        alice.get(f"/v1/tasks/{uuid.uuid4()}"),
        alice.delete("/v1/tasks", params={"completed": "true"}),
    ):
        assert_rate_limited(refused)


@pytest.mark.usefixtures("one_window")
def test_the_limit_is_per_user_and_health_and_metrics_are_not_limited(
    api: Api, alice: UserClient, bob: UserClient
) -> None:
    for _ in range(LIMIT):
        assert alice.get("/v1/tasks").status_code == 200
    assert_rate_limited(alice.get("/v1/tasks"))
    assert bob.get("/v1/tasks").status_code == 200
    anonymous = api.anonymous()
    for path in ("/livez", "/readyz", "/metrics"):
        assert anonymous.get(path).status_code == 200


@pytest.mark.usefixtures("one_window")
def test_a_refused_token_is_a_401_not_a_count(api: Api, alice: UserClient) -> None:
    """The owner is known only from a valid token: no token, no count, no 429."""
    anonymous = api.anonymous()
    for _ in range(LIMIT + 2):
        assert anonymous.get("/v1/tasks").status_code == 401
    assert alice.get("/v1/tasks").status_code == 200


@pytest.mark.usefixtures("one_window")
def test_refusals_are_counted_in_a_metric(api: Api, alice: UserClient) -> None:
    def refused() -> float:
        text = api.anonymous().get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "taskstack_tasks_rate_limited_total":
                    return sample.value
        raise AssertionError("no rate-limit counter")

    before = refused()
    for _ in range(LIMIT + 3):
        alice.get("/v1/tasks")
    assert refused() - before == 3


def test_the_openapi_document_names_the_429_and_its_headers(api: Api) -> None:
    schema: dict[str, Any] = api.anonymous().get("/v1/tasks/openapi.json").json()
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            answer = operation["responses"]["429"]
            assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(answer["headers"])


@pytest.mark.usefixtures("one_window")
def test_the_stored_count_follows_the_requests(alice: UserClient, db: Database) -> None:
    for _ in range(3):
        alice.get("/v1/tasks")

    def shared() -> int:
        return int(
            db.scalar(
                SHARED + " WHERE owner_id = %s",
                alice.subject,
            )
        )

    deadline = time.monotonic() + 5
    while shared() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shared() == 3, "the app's background flush shared its count"
