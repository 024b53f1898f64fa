"""The per-user task quota: full is a 403, concurrent creates never pass it, deletes free room."""

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL

from taskstack.tasks.main import create_app
from tests.support.servers import serve
from tests.tasks.conftest import Api, Database, UserClient, both_entries, new_task, tasks_settings

QUOTA = 4


@both_entries
def tasks_front(request: pytest.FixtureRequest) -> bool:
    """Every test here runs against both entries: TaskFront and the FastAPI route."""
    return bool(request.param)


@pytest.fixture(scope="module")
def tasks_url(migrated_database: URL, jwks_url: str, tasks_front: bool) -> Iterator[str]:
    settings = tasks_settings(
        migrated_database, jwks_url, tasks_front=tasks_front, tasks_max_tasks_per_user=QUOTA
    )
    with serve(create_app(settings)) as base_url:
        yield base_url


def assert_quota_full(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == (
        f"You have reached the limit of {QUOTA} tasks; delete some to create more."
    )


def counted(db: Database, owner: uuid.UUID) -> tuple[int, int]:
    """The owner's tasks: as task_count holds them, and as the rows are."""
    stored = db.rows("SELECT tasks FROM tasks.task_count WHERE owner_id = %s", owner)
    rows = db.scalar("SELECT count(*) FROM tasks.task WHERE owner_id = %s", owner)
    return (stored[0][0] if stored else 0), int(rows)


def fill(client: UserClient, **fields: object) -> list[str]:
    return [new_task(client, title=f"task {n}", **fields)["id"] for n in range(QUOTA)]


def test_a_full_quota_refuses_the_next_create_and_only_for_its_owner(
    alice: UserClient, bob: UserClient, db: Database
) -> None:
    fill(alice)
    assert_quota_full(alice.post("/v1/tasks", json={"title": "one too many"}))
    assert counted(db, alice.subject) == (QUOTA, QUOTA)
    assert new_task(bob)["title"] == "a task", "bob's quota is his own"
    assert counted(db, bob.subject) == (1, 1)


def test_reads_and_changes_go_on_when_the_quota_is_full(alice: UserClient) -> None:
    first, *_ = fill(alice)
    assert alice.get("/v1/tasks").status_code == 200
    assert alice.patch(f"/v1/tasks/{first}", json={"completed": True}).status_code == 200
    assert alice.put(f"/v1/tasks/{first}", json={"title": "replaced"}).status_code == 200


def test_deleting_a_task_frees_room_for_one(alice: UserClient, db: Database) -> None:
    first, *_ = fill(alice)
    assert alice.delete(f"/v1/tasks/{first}").status_code == 204
    assert counted(db, alice.subject) == (QUOTA - 1, QUOTA - 1)
    new_task(alice)
    assert_quota_full(alice.post("/v1/tasks", json={"title": "full again"}))


def test_a_refused_delete_frees_nothing(alice: UserClient, db: Database) -> None:
    first, *_ = fill(alice)
    stale = alice.delete(f"/v1/tasks/{first}", headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    assert alice.delete(f"/v1/tasks/{uuid.uuid4()}").status_code == 404
    assert counted(db, alice.subject) == (QUOTA, QUOTA)


def test_deleting_completed_tasks_frees_room_for_as_many(alice: UserClient, db: Database) -> None:
    new_task(alice, completed=True)
    new_task(alice, completed=True)
    new_task(alice)
    new_task(alice)
    assert alice.delete("/v1/tasks", params={"completed": "true"}).json() == {"deleted": 2}
    assert counted(db, alice.subject) == (2, 2)
    new_task(alice)
    new_task(alice)
    assert_quota_full(alice.post("/v1/tasks", json={"title": "full again"}))
    # Nothing completed: nothing deleted, nothing uncounted.
    assert alice.delete("/v1/tasks", params={"completed": "true"}).json() == {"deleted": 0}
    assert counted(db, alice.subject) == (QUOTA, QUOTA)


def test_a_keyed_create_meets_the_same_quota_and_its_key_stays_free(
    alice: UserClient, db: Database
) -> None:
    first, *_ = fill(alice)
    key = {"Idempotency-Key": "after-the-quota"}
    assert_quota_full(alice.post("/v1/tasks", json={"title": "keyed"}, headers=key))
    assert db.scalar("SELECT count(*) FROM tasks.idempotency_key") == 0
    alice.delete(f"/v1/tasks/{first}")
    created = alice.post("/v1/tasks", json={"title": "keyed"}, headers=key)
    assert created.status_code == 201, created.text
    replayed = alice.post("/v1/tasks", json={"title": "keyed"}, headers=key)
    assert replayed.status_code == 201, "a replay is not a create: the full quota is moot"
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert counted(db, alice.subject) == (QUOTA, QUOTA)


async def create_concurrently(api: Api, subject: uuid.UUID, count: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {api.mint.token(subject)}"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(n: int) -> httpx.Response:
            await start.wait()
            # Half of them keyed: both kinds of create meet the one counter.
            keyed = {"Idempotency-Key": f"racer-{n}"} if n % 2 else {}
            return await client.post(
                "/v1/tasks", json={"title": f"racer {n}"}, headers=headers | keyed
            )

        requests = [asyncio.create_task(one(n)) for n in range(count)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*requests)


@pytest.mark.timeout(120)
def test_concurrent_creates_never_pass_the_quota(api: Api, db: Database) -> None:
    for _ in range(3):  # a new owner (whose counter row does not exist yet) each time
        owner = uuid.uuid4()
        responses = asyncio.run(create_concurrently(api, owner, 20))
        assert Counter(r.status_code for r in responses) == {201: QUOTA, 403: 20 - QUOTA}
        assert counted(db, owner) == (QUOTA, QUOTA)


def test_refusals_are_counted_in_a_metric(api: Api, alice: UserClient) -> None:
    def refusals() -> float:
        text = api.anonymous().get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "taskstack_tasks_quota_refusals_total":
                    return sample.value
        raise AssertionError("no quota counter")

    fill(alice)
    before = refusals()
    for _ in range(2):
        assert_quota_full(alice.post("/v1/tasks", json={"title": "no room"}))
    assert refusals() - before == 2
