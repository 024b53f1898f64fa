"""Two users: neither can see, change or delete the other's tasks, nor learn they exist."""

import pytest

from tests.tasks.conftest import Database, UserClient, both_entries, new_task


@both_entries
def tasks_front(request: pytest.FixtureRequest) -> bool:
    """Every test here runs against both entries: TaskFront and the FastAPI routes."""
    return bool(request.param)


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("if_match", [None, '"1"', '"2"', "*"])
def test_another_users_task_is_not_found_on_every_method(
    alice: UserClient, bob: UserClient, db: Database, method: str, if_match: str | None
) -> None:
    task = new_task(alice, title="alice's secret")
    headers = {"If-Match": if_match} if if_match else {}
    response = bob.request(
        method, f"/v1/tasks/{task['id']}", json={"title": "mine now"}, headers=headers
    )
    missing = bob.request(
        method, f"/v1/tasks/{task['id'][:-4]}ffff", json={"title": "x"}, headers=headers
    )
    assert response.status_code == 404
    # Exactly what a task that does not exist at all gets: no hint that it exists.
    assert missing.status_code == 404
    assert {k: v for k, v in response.json().items() if k != "request_id"} == {
        k: v for k, v in missing.json().items() if k != "request_id"
    }
    assert "etag" not in response.headers
    assert db.rows("SELECT owner_id, title, version FROM tasks.task") == [
        (alice.subject, "alice's secret", 1)
    ]


def test_lists_show_only_the_callers_tasks(alice: UserClient, bob: UserClient) -> None:
    mine = {new_task(alice, title=f"a{n}", tags=["shared"])["id"] for n in range(3)}
    theirs = {new_task(bob, title=f"b{n}", tags=["shared"])["id"] for n in range(2)}
    for query in ({}, {"tag": "shared"}, {"q": "a"}, {"include_total": "true"}):
        page = alice.get("/v1/tasks", params=query).json()
        assert {task["id"] for task in page["items"]} <= mine
    assert alice.get("/v1/tasks", params={"include_total": "true"}).json()["total"] == 3
    assert {t["id"] for t in bob.get("/v1/tasks").json()["items"]} == theirs


def test_a_cursor_is_useless_to_another_user(alice: UserClient, bob: UserClient) -> None:
    for n in range(3):
        new_task(alice, title=f"a{n}")
        new_task(bob, title=f"b{n}")
    cursor = alice.get("/v1/tasks", params={"limit": 1}).json()["next_cursor"]
    response = bob.get("/v1/tasks", params={"limit": 1, "cursor": cursor})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_the_owner_comes_from_the_token_never_the_body(
    alice: UserClient, bob: UserClient, db: Database
) -> None:
    response = alice.post("/v1/tasks", json={"title": "t", "owner_id": str(bob.subject)})
    assert response.status_code == 422
    new_task(alice)
    assert db.rows("SELECT owner_id FROM tasks.task") == [(alice.subject,)]
