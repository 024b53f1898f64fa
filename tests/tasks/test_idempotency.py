"""Idempotency-Key on POST /v1/tasks: replay, mismatch, in-flight duplicates, expiry."""

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.tasks.conftest import Api, Database, UserClient, both_entries


@both_entries
def tasks_front(request: pytest.FixtureRequest) -> bool:
    """Every test here runs against both entries: TaskFront and the FastAPI route."""
    return bool(request.param)


def post(client: UserClient, key: str, body: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})


def test_a_retry_replays_the_first_response(alice: UserClient, db: Database) -> None:
    first = post(alice, "key-1", {"title": "pay rent", "tags": ["home"]})
    assert first.status_code == 201
    # The same request again, spelled differently: same parsed body.
    retry = alice.post(
        "/v1/tasks",
        content=b'{ "tags":["home"],  "title":"pay rent" }',
        headers={"Idempotency-Key": "key-1", "Content-Type": "application/json"},
    )
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers["location"] == first.headers["location"]
    assert retry.headers["etag"] == first.headers["etag"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert db.task_count() == 1
    assert db.rows("SELECT key, response_status FROM tasks.idempotency_key") == [("key-1", 201)]


def test_the_same_key_with_another_body_is_422(alice: UserClient, db: Database) -> None:
    assert post(alice, "key-1", {"title": "pay rent"}).status_code == 201
    response = post(alice, "key-1", {"title": "pay the rent"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in response.json()["detail"]
    assert db.task_count() == 1


def test_keys_are_scoped_per_user(alice: UserClient, bob: UserClient, db: Database) -> None:
    a = post(alice, "shared-key", {"title": "t"})
    b = post(bob, "shared-key", {"title": "t"})
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert db.task_count() == 2


def test_without_a_key_every_post_creates(alice: UserClient, db: Database) -> None:
    for _ in range(2):
        assert alice.post("/v1/tasks", json={"title": "t"}).status_code == 201
    assert db.task_count() == 2
    assert db.scalar("SELECT count(*) FROM tasks.idempotency_key") == 0


def test_a_failed_request_leaves_the_key_free(alice: UserClient, db: Database) -> None:
    assert post(alice, "key-1", {"title": ""}).status_code == 422
    assert post(alice, "key-1", {"title": "fixed"}).status_code == 201
    assert db.task_count() == 1


def test_the_replay_is_the_original_response_even_after_changes(alice: UserClient) -> None:
    first = post(alice, "key-1", {"title": "t"})
    alice.patch(first.headers["location"], json={"title": "renamed"})
    replay = post(alice, "key-1", {"title": "t"})
    assert replay.json()["title"] == "t" and replay.json()["version"] == 1


def test_an_expired_key_is_forgotten_and_purged(alice: UserClient, db: Database) -> None:
    first = post(alice, "old-key", {"title": "t"})
    post(alice, "other-old-key", {"title": "t"})
    db.execute("UPDATE tasks.idempotency_key SET expires_at = now() - interval '1 second'")
    again = post(alice, "old-key", {"title": "t"})
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    # Reusing one key also purged the other expired one.
    assert db.rows("SELECT key FROM tasks.idempotency_key") == [("old-key",)]
    assert db.scalar(
        "SELECT expires_at - created_at >= interval '24 hours' FROM tasks.idempotency_key"
    )


async def fire(api: Api, subject: uuid.UUID, count: int, key: str) -> list[httpx.Response]:
    token = api.mint.token(subject)
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one() -> httpx.Response:
            await start.wait()
            return await client.post(
                "/v1/tasks",
                json={"title": "exactly once"},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            )

        requests = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*requests)


@pytest.mark.timeout(120)
def test_fifty_concurrent_identical_requests_create_exactly_one_task(
    api: Api, db: Database
) -> None:
    subject = uuid.uuid4()
    responses = asyncio.run(fire(api, subject, 50, "concurrent-key"))
    statuses = Counter(response.status_code for response in responses)
    assert set(statuses) <= {201, 409}, statuses
    assert statuses[201] >= 1
    created = {response.json()["id"] for response in responses if response.status_code == 201}
    assert len(created) == 1
    for response in responses:
        if response.status_code == 409:
            assert response.headers["content-type"] == "application/problem+json"
    assert db.rows("SELECT id, owner_id FROM tasks.task") == [(uuid.UUID(created.pop()), subject)]
    print(f"50 concurrent requests, one key: {dict(statuses)}")
