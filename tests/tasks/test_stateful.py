"""Property: any sequence of creates, patches and deletes keeps GET /v1/tasks consistent
with a plain in-memory model of one user's tasks (contents, filters, order, pages)."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests.tasks.conftest import Api, UserClient

Task = dict[str, Any]

RANK = {"low": 0, "normal": 1, "high": 2}
TAGS = ["home", "work", "kids", "errand"]
BASE = datetime(2030, 1, 1, tzinfo=UTC)
SORTS = [
    f"{sign}{key}"
    for key in ("created_at", "updated_at", "due_at", "priority", "title")
    for sign in ("", "-")
]

words = st.text(alphabet="abcAB _%", min_size=1, max_size=12).filter(lambda s: s.strip())
due_times = st.integers(-3, 3).map(lambda days: (BASE + timedelta(days=days)).isoformat())
fields = st.fixed_dictionaries(
    {},
    optional={
        "title": words,
        "description": st.none() | st.text(alphabet="abcxyz ", max_size=10),
        "completed": st.booleans(),
        "priority": st.sampled_from(list(RANK)),
        "due_at": st.none()
        | st.integers(-3, 3).map(lambda d: (BASE + timedelta(days=d)).isoformat()),
        "tags": st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
    },
)


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value)


def expected_order(tasks: list[Task], sort: str) -> list[str]:
    descending = sort.startswith("-")
    key = sort.removeprefix("-")

    def value(task: Task) -> Any:
        if key == "priority":
            return RANK[task["priority"]]
        if key == "title":
            return task["title"]
        if key == "due_at":
            missing = task["due_at"] is None
            return (missing != descending, BASE if missing else parse(task["due_at"]))
        return parse(task[key])

    ordered = sorted(tasks, key=lambda t: (value(t), uuid.UUID(t["id"])), reverse=descending)
    return [task["id"] for task in ordered]


class TasksOfOneUser(RuleBasedStateMachine):
    api: Api

    def __init__(self) -> None:
        super().__init__()
        self.client: UserClient = self.api.user()  # a new user: an empty list
        self.model: dict[str, Task] = {}

    ids = Bundle("ids")

    @rule(target=ids, body=fields, title=words)
    def create(self, body: dict[str, Any], title: str) -> str:
        response = self.client.post("/v1/tasks", json={**body, "title": title})
        assert response.status_code == 201, response.text
        task: Task = response.json()
        assert task["title"] == title.strip()
        assert task["completed"] == body.get("completed", False)
        assert task["tags"] == body.get("tags", [])
        self.model[task["id"]] = task
        return str(task["id"])

    @rule(task_id=ids, patch=fields)
    def patch(self, task_id: str, patch: dict[str, Any]) -> None:
        response = self.client.patch(f"/v1/tasks/{task_id}", json=patch)
        if task_id not in self.model:
            assert response.status_code == 404
            return
        assert response.status_code == 200, response.text
        before, after = self.model[task_id], response.json()
        for name in ("title", "description", "completed", "priority", "tags"):
            wanted = patch.get(name, before[name])
            assert after[name] == (str(wanted).strip() if name == "title" else wanted)
        if "due_at" in patch:
            assert (after["due_at"] is None) == (patch["due_at"] is None)
        else:
            assert after["due_at"] == before["due_at"]
        assert after["version"] == before["version"] + 1
        assert (after["completed_at"] is not None) == after["completed"]
        self.model[task_id] = after

    @rule(task_id=consumes(ids))
    def delete(self, task_id: str) -> None:
        response = self.client.delete(f"/v1/tasks/{task_id}")
        assert response.status_code == (204 if task_id in self.model else 404)
        self.model.pop(task_id, None)

    @rule()
    def delete_completed(self) -> None:
        response = self.client.delete("/v1/tasks", params={"completed": "true"})
        done = [task_id for task_id, task in self.model.items() if task["completed"]]
        assert response.json() == {"deleted": len(done)}
        for task_id in done:
            del self.model[task_id]

    @rule(
        sort=st.sampled_from(SORTS),
        limit=st.integers(1, 4),
        query=st.fixed_dictionaries(
            {},
            optional={
                "completed": st.booleans(),
                "priority": st.lists(st.sampled_from(list(RANK)), min_size=1, max_size=2),
                "tag": st.lists(st.sampled_from(TAGS), min_size=1, max_size=2, unique=True),
                "q": st.sampled_from(["a", "B", "ab", "%", "_", "x"]),
            },
        ),
    )
    def list_pages(self, sort: str, limit: int, query: dict[str, Any]) -> None:
        def matches(task: Task) -> bool:
            text = (task["title"] + "\n" + (task["description"] or "")).lower()
            return (
                task["completed"] == query.get("completed", task["completed"])
                and task["priority"] in query.get("priority", RANK)
                and set(query.get("tag", [])) <= set(task["tags"])
                and ("q" not in query or query["q"].lower() in text)
            )

        params: dict[str, Any] = {**query, "sort": sort, "limit": limit}
        listed: list[Task] = []
        while True:
            response = self.client.get("/v1/tasks", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= limit
            listed += page["items"]
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        expected = [task for task in self.model.values() if matches(task)]
        assert [task["id"] for task in listed] == expected_order(expected, sort)
        assert {task["id"]: task for task in listed} == {task["id"]: task for task in expected}

    @invariant()
    def everything_is_listed(self) -> None:
        page = self.client.get("/v1/tasks", params={"limit": 100, "include_total": "true"})
        body = page.json()
        assert body["total"] == len(self.model)
        assert {task["id"]: task for task in body["items"]} == self.model


def test_random_operations_agree_with_an_in_memory_model(api: Api) -> None:
    machine = type("TasksMachine", (TasksOfOneUser,), {"api": api})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
