"""Task activity counters: created, completed (once per completion), deleted."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.tasks.conftest import UserClient, new_task


def counters(client: httpx.Client) -> dict[str, float]:
    names = {
        "taskstack_tasks_created_total",
        "taskstack_tasks_completed_total",
        "taskstack_tasks_deleted_total",
    }
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name in names:
                found[sample.name.removeprefix("taskstack_tasks_").removesuffix("_total")] = (
                    sample.value
                )
    return found


def test_activity_is_counted_once_per_change(alice: UserClient) -> None:
    before = counters(alice)
    done_at_birth = new_task(alice, completed=True)
    open_task = new_task(alice)
    patch = {"content-type": "application/merge-patch+json"}
    alice.patch(f"/v1/tasks/{open_task['id']}", json={"completed": True}, headers=patch)
    alice.patch(f"/v1/tasks/{open_task['id']}", json={"title": "still done"}, headers=patch)
    alice.patch(f"/v1/tasks/{open_task['id']}", json={"completed": True}, headers=patch)
    alice.delete(f"/v1/tasks/{done_at_birth['id']}")
    new_task(alice, completed=True)
    assert alice.delete("/v1/tasks", params={"completed": "true"}).json()["deleted"] == 2
    after = counters(alice)
    assert {name: after[name] - before[name] for name in after} == {
        "created": 3,
        "completed": 3,
        "deleted": 3,
    }
