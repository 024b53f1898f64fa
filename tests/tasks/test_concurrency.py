"""Concurrent writers and readers: If-Match lets exactly one win; pages stay stable."""

import asyncio
import threading
import uuid
from collections import Counter

import httpx
import pytest

from tests.tasks.conftest import Api, Database, UserClient, new_task


async def patch_concurrently(
    api: Api, subject: uuid.UUID, url: str, etag: str, count: int
) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {api.mint.token(subject)}", "If-Match": etag}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(n: int) -> httpx.Response:
            await start.wait()
            return await client.patch(url, json={"title": f"writer {n}"}, headers=headers)

        requests = [asyncio.create_task(one(n)) for n in range(count)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*requests)


@pytest.mark.timeout(120)
def test_twenty_patches_with_one_etag_one_wins(api: Api, alice: UserClient, db: Database) -> None:
    task = new_task(alice)
    url = f"/v1/tasks/{task['id']}"
    responses = asyncio.run(patch_concurrently(api, alice.subject, url, '"1"', 20))
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {200: 1, 412: 19}, statuses
    winner = next(r for r in responses if r.status_code == 200).json()
    assert winner["version"] == 2
    assert db.rows("SELECT title, version FROM tasks.task") == [(winner["title"], 2)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sort", ["-created_at", "created_at", "title", "-priority", "due_at"])
def test_pages_stay_stable_while_tasks_are_inserted_and_deleted(
    api: Api, alice: UserClient, sort: str
) -> None:
    """Rows that exist throughout show up exactly once, whatever happens between pages."""
    priorities = ["low", "normal", "high"]
    originals = [
        new_task(
            alice,
            title=f"original {n:02}",
            priority=priorities[n % 3],
            due_at=f"2030-01-{n % 28 + 1:02}T00:00:00Z" if n % 4 else None,
        )
        for n in range(30)
    ]
    doomed = {task["id"] for task in originals[1::5]}
    kept = {task["id"] for task in originals} - doomed
    writer = api.user(alice.subject)
    stop = threading.Event()
    errors: list[str] = []

    def churn() -> None:
        n = 0
        pending = list(doomed)
        while not stop.is_set():
            response = writer.post(
                "/v1/tasks",
                json={"title": f"inserted {n:03}", "priority": priorities[n % 3]},
            )
            if response.status_code != 201:
                errors.append(response.text)
            if pending:
                writer.delete(f"/v1/tasks/{pending.pop()}")
            n += 1

    thread = threading.Thread(target=churn)
    thread.start()
    seen: list[str] = []
    try:
        params: dict[str, str | int] = {"sort": sort, "limit": 4}
        while True:
            page = alice.get("/v1/tasks", params=params).json()
            seen += [task["id"] for task in page["items"]]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert len(seen) == len(set(seen)), "a task was listed twice"
    assert kept <= set(seen), "a task that existed throughout was skipped"
