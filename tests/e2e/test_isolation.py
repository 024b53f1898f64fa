"""Item 7: two users through the gateway; every tasks route and method, with the other's ids."""

import itertools
import uuid
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.harness import Stack, User, new_user
from tests.e2e.report import Reliability

pytestmark = pytest.mark.e2e

METHODS = ("GET", "PUT", "PATCH", "DELETE")


@dataclass
class Attempts:
    """Cross-user attempts, and those that got anything but a refusal."""

    made: int = 0
    succeeded: list[str] = field(default_factory=list)

    def check(self, label: str, refused: bool) -> None:
        self.made += 1
        if not refused:
            self.succeeded.append(label)


def task_ids(page: httpx.Response) -> set[str]:
    return {task["id"] for task in page.json()["items"]}


def create(client: httpx.Client, user: User, **fields: object) -> httpx.Response:
    response = client.post("/v1/tasks", json={"title": "a task", **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response


def test_no_route_lets_one_user_reach_anothers_tasks(
    stack: Stack, reliability: Reliability
) -> None:
    client = stack.client()
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    created = [
        create(client, alice, title="alice's secret"),
        create(client, alice, title="alice's done", completed=True),
        create(client, alice, title="alice's dated", due_at="2030-01-01T00:00:00Z", tags=["x"]),
    ]
    originals = {r.json()["id"]: r.json() for r in created}
    etags = {r.json()["id"]: r.headers["ETag"] for r in created}
    attempts = Attempts()

    # Every method on each of alice's tasks, with every kind of precondition.
    for (task_id, etag), method in itertools.product(etags.items(), METHODS):
        for precondition in ({}, {"If-Match": etag}, {"If-Match": "*"}, {"If-None-Match": etag}):
            response = client.request(
                method,
                f"/v1/tasks/{task_id}",
                json={"title": "bob's now", "completed": False},
                headers={**bob.headers, **precondition},
            )
            refused = response.status_code == 404 and task_id not in response.text
            attempts.check(f"{method} {precondition} → {response.status_code}", refused)

    # The collection routes: bob's list, bulk delete and idempotent replay see only his own.
    for params in ({}, {"include_total": "true"}, {"q": "alice"}, {"tag": "x"}):
        listed = client.get("/v1/tasks", params=params, headers=bob.headers)
        attempts.check(f"list {params}", listed.status_code == 200 and not task_ids(listed))
    bulk = client.delete("/v1/tasks", params={"completed": "true"}, headers=bob.headers)
    attempts.check("bulk delete", bulk.status_code == 200 and bulk.json() == {"deleted": 0})
    key = {"Idempotency-Key": uuid.uuid4().hex}
    client.post("/v1/tasks", json={"title": "keyed"}, headers={**alice.headers, **key})
    replay = client.post("/v1/tasks", json={"title": "keyed"}, headers={**bob.headers, **key})
    attempts.check(
        "idempotency key replay",
        replay.status_code == 201
        and "idempotent-replayed" not in replay.headers
        and replay.json()["id"] not in originals,
    )
    cursor = client.get("/v1/tasks", params={"limit": 1}, headers=alice.headers)
    theirs = {"limit": 1, "cursor": cursor.json()["next_cursor"]}
    stolen = client.get("/v1/tasks", params=theirs, headers=bob.headers)
    attempts.check("another user's cursor", stolen.status_code == 400)

    unchanged = all(
        client.get(f"/v1/tasks/{task_id}", headers=alice.headers).json() == original
        for task_id, original in originals.items()
    )
    reliability.record(
        7,
        "Isolation",
        f"{attempts.made} cross-user attempts, {len(attempts.succeeded)} succeeded; "
        f"the owner's {len(originals)} tasks {'unchanged' if unchanged else 'CHANGED'}",
    )
    assert attempts.succeeded == []
    assert unchanged
