"""Every endpoint over HTTP against PostgreSQL: status, headers, body and what is stored."""

import re
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.tasks.conftest import Api, Database, UserClient, both_entries, new_task


@both_entries
def tasks_front(request: pytest.FixtureRequest) -> bool:
    """Every test here runs against both entries: TaskFront and the FastAPI routes."""
    return bool(request.param)


def test_create_answers_201_with_location_and_etag(alice: UserClient, db: Database) -> None:
    response = alice.post(
        "/v1/tasks",
        json={
            "title": "  Buy milk ",
            "description": "semi-skimmed",
            "priority": "high",
            "due_at": "2030-01-01T09:00:00+01:00",
            "tags": ["home", "shopping"],
        },
    )
    assert response.status_code == 201
    task = response.json()
    assert response.headers["location"] == f"/v1/tasks/{task['id']}"
    assert response.headers["etag"] == '"1"'
    assert uuid.UUID(task["id"]).version == 7
    assert task["title"] == "Buy milk"
    assert task["priority"] == "high"
    assert task["due_at"] == "2030-01-01T08:00:00Z"
    assert task["tags"] == ["home", "shopping"]
    assert task["completed"] is False and task["completed_at"] is None
    assert task["version"] == 1
    assert task["created_at"] == task["updated_at"]
    stored = db.rows("SELECT owner_id, title, priority, tags FROM tasks.task")
    assert stored == [(alice.subject, "Buy milk", 2, ["home", "shopping"])]


def test_creating_a_completed_task_sets_completed_at(alice: UserClient) -> None:
    task = new_task(alice, completed=True)
    assert task["completed"] is True and task["completed_at"] == task["created_at"]


def test_get_answers_the_task_with_its_etag(alice: UserClient) -> None:
    task = new_task(alice)
    response = alice.get(f"/v1/tasks/{task['id']}")
    assert response.status_code == 200
    assert response.json() == task
    assert response.headers["etag"] == '"1"'


@pytest.mark.parametrize("header", ['"1"', 'W/"1"', '"7", "1"', "*"])
def test_if_none_match_answers_304(alice: UserClient, header: str) -> None:
    task = new_task(alice)
    response = alice.get(f"/v1/tasks/{task['id']}", headers={"If-None-Match": header})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == '"1"'


def test_if_none_match_with_an_old_etag_answers_the_task(alice: UserClient) -> None:
    task = new_task(alice)
    alice.patch(f"/v1/tasks/{task['id']}", json={"title": "changed"})
    response = alice.get(f"/v1/tasks/{task['id']}", headers={"If-None-Match": '"1"'})
    assert response.status_code == 200 and response.json()["title"] == "changed"


def test_put_replaces_every_writable_field(alice: UserClient, db: Database) -> None:
    task = new_task(
        alice, description="d", priority="high", tags=["x"], due_at="2030-01-01T00:00:00Z"
    )
    response = alice.put(f"/v1/tasks/{task['id']}", json={"title": "new", "completed": True})
    assert response.status_code == 200
    replaced = response.json()
    assert response.headers["etag"] == '"2"'
    assert replaced["title"] == "new"
    assert replaced["description"] is None and replaced["due_at"] is None
    assert replaced["priority"] == "normal" and replaced["tags"] == []
    assert replaced["completed"] is True and replaced["completed_at"] is not None
    assert replaced["version"] == 2
    assert replaced["created_at"] == task["created_at"]
    assert replaced["updated_at"] > task["updated_at"]
    assert db.scalar("SELECT version FROM tasks.task") == 2


def test_put_with_a_matching_if_match(alice: UserClient) -> None:
    task = new_task(alice)
    url = f"/v1/tasks/{task['id']}"
    assert alice.put(url, json={"title": "a"}, headers={"If-Match": '"1"'}).status_code == 200
    stale = alice.put(url, json={"title": "b"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.headers["etag"] == '"2"'
    assert alice.get(url).json()["title"] == "a"


def test_patch_is_a_json_merge_patch(alice: UserClient) -> None:
    task = new_task(alice, description="keep me?", tags=["a"], due_at="2030-01-01T00:00:00Z")
    url = f"/v1/tasks/{task['id']}"
    response = alice.patch(
        url,
        content=b'{"priority": "low", "description": null}',
        headers={"Content-Type": "application/merge-patch+json", "If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["priority"] == "low" and patched["description"] is None
    assert patched["title"] == "a task" and patched["tags"] == ["a"]
    assert patched["due_at"] == "2030-01-01T00:00:00Z"
    assert patched["version"] == 2 and response.headers["etag"] == '"2"'


def test_patch_accepts_plain_json_and_refuses_other_media_types(alice: UserClient) -> None:
    task = new_task(alice)
    url = f"/v1/tasks/{task['id']}"
    assert alice.patch(url, json={"tags": ["b"]}).json()["tags"] == ["b"]
    text = alice.patch(url, content=b"tags=c", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    assert alice.get(url).json()["tags"] == ["b"]


def test_completing_and_reopening_sets_and_clears_completed_at(alice: UserClient) -> None:
    task = new_task(alice)
    url = f"/v1/tasks/{task['id']}"
    done = alice.patch(url, json={"completed": True}).json()
    assert done["completed_at"] is not None
    again = alice.patch(url, json={"completed": True, "title": "still done"}).json()
    assert again["completed_at"] == done["completed_at"]
    reopened = alice.patch(url, json={"completed": False}).json()
    assert reopened["completed_at"] is None and reopened["version"] == 4


def test_patch_without_changes_still_validates_and_bumps(alice: UserClient) -> None:
    task = new_task(alice)
    response = alice.patch(f"/v1/tasks/{task['id']}", json={})
    assert response.status_code == 200 and response.json()["version"] == 2


@pytest.mark.parametrize("body", [b"[]", b'"title"', b"null", b"3"])
def test_patch_must_be_an_object(alice: UserClient, body: bytes) -> None:
    task = new_task(alice)
    response = alice.patch(
        f"/v1/tasks/{task['id']}",
        content=body,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 422
    assert alice.get(f"/v1/tasks/{task['id']}").json()["version"] == 1


def test_delete_answers_204_and_removes_the_row(alice: UserClient, db: Database) -> None:
    task = new_task(alice)
    response = alice.delete(f"/v1/tasks/{task['id']}")
    assert response.status_code == 204 and response.content == b""
    assert db.task_count() == 0
    assert alice.get(f"/v1/tasks/{task['id']}").status_code == 404
    assert alice.delete(f"/v1/tasks/{task['id']}").status_code == 404


def test_delete_honours_if_match(alice: UserClient, db: Database) -> None:
    task = new_task(alice)
    url = f"/v1/tasks/{task['id']}"
    alice.patch(url, json={"title": "changed"})
    assert alice.delete(url, headers={"If-Match": '"1"'}).status_code == 412
    assert db.task_count() == 1
    assert alice.delete(url, headers={"If-Match": '"2"'}).status_code == 204
    assert db.task_count() == 0


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_writes_to_a_missing_task_are_404_even_with_if_match(
    alice: UserClient, method: str
) -> None:
    response = alice.request(
        method, f"/v1/tasks/{uuid.uuid4()}", json={"title": "x"}, headers={"If-Match": '"1"'}
    )
    assert response.status_code == 404
    assert response.json()["title"] == "Not Found"


def test_bulk_delete_removes_only_the_callers_completed_tasks(
    alice: UserClient, bob: UserClient, db: Database
) -> None:
    for n in range(3):
        new_task(alice, title=f"done {n}", completed=True)
    open_task = new_task(alice, title="open")
    new_task(bob, title="bob's", completed=True)
    response = alice.delete("/v1/tasks", params={"completed": "true"})
    assert response.status_code == 200
    assert response.json() == {"deleted": 3}
    assert db.rows("SELECT title FROM tasks.task ORDER BY title") == [("bob's",), ("open",)]
    assert alice.delete("/v1/tasks", params={"completed": "true"}).json() == {"deleted": 0}
    assert alice.get(f"/v1/tasks/{open_task['id']}").status_code == 200


@pytest.mark.parametrize("query", [{}, {"completed": "false"}, {"completed": "maybe"}])
def test_bulk_delete_needs_completed_true(
    alice: UserClient, db: Database, query: dict[str, str]
) -> None:
    new_task(alice, completed=True)
    new_task(alice)
    response = alice.delete("/v1/tasks", params=query)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert db.task_count() == 2


ENDPOINTS = [
    ("GET", "/v1/tasks"),
    ("POST", "/v1/tasks"),
    ("DELETE", "/v1/tasks?completed=true"),
    ("GET", "/v1/tasks/{id}"),
    ("PUT", "/v1/tasks/{id}"),
    ("PATCH", "/v1/tasks/{id}"),
    ("DELETE", "/v1/tasks/{id}"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic YTpi", "forged"])
def test_every_endpoint_needs_a_valid_token(
    api: Api,
    alice: UserClient,
    db: Database,
    method: str,
    path: str,
    authorization: str | None,
) -> None:
    task = new_task(alice)
    headers = {}
    if authorization == "forged":
        # The right kid and claims, signed with someone else's key.
        foreign_key = ec.generate_private_key(ec.SECP256R1())
        forged = api.mint.token(alice.subject, key=foreign_key)
        headers["Authorization"] = f"Bearer {forged}"
    elif authorization is not None:
        headers["Authorization"] = authorization
    response = api.anonymous().request(
        method, path.format(id=task["id"]), json={"title": "x"}, headers=headers
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="taskstack"')
    assert response.headers["content-type"] == "application/problem+json"
    assert db.rows("SELECT title, version FROM tasks.task") == [("a task", 1)]


def test_openapi_declares_each_operations_statuses(api: Api) -> None:
    schema = api.anonymous().get("/v1/tasks/openapi.json").json()
    paths = schema["paths"]
    assert {"201", "401", "409", "413", "415", "422", "503"} <= set(
        paths["/v1/tasks"]["post"]["responses"]
    )
    assert {"200", "400", "401", "422"} <= set(paths["/v1/tasks"]["get"]["responses"])
    item = paths["/v1/tasks/{task_id}"]
    assert {"200", "304", "404", "401"} <= set(item["get"]["responses"])
    for method in ("put", "patch", "delete"):
        assert {"404", "412", "401"} <= set(item[method]["responses"])
    assert set(item["patch"]["requestBody"]["content"]) == {
        "application/merge-patch+json",
        "application/json",
    }
    problem = {"$ref": "#/components/schemas/Problem"}
    assert item["put"]["responses"]["412"]["content"]["application/problem+json"]["schema"] == (
        problem
    )
    assert "Idempotency-Key" in {p["name"] for p in paths["/v1/tasks"]["post"]["parameters"]}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/tasks", "GET, HEAD, POST, DELETE"),
        ("PUT", "/v1/tasks", "GET, HEAD, POST, DELETE"),
        ("POST", "/v1/tasks/{id}", "GET, HEAD, PUT, PATCH, DELETE"),
    ],
)
def test_a_wrong_method_is_405_naming_every_allowed_one(
    alice: UserClient, method: str, path: str, allow: str
) -> None:
    task = new_task(alice)
    response = alice.request(method, path.format(id=task["id"]))
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.headers["content-type"] == "application/problem+json"


def test_head_answers_the_list_and_a_task_as_get_without_the_body(alice: UserClient) -> None:
    task = new_task(alice)
    for path in ("/v1/tasks", f"/v1/tasks/{task['id']}"):
        get, head = alice.get(path), alice.head(path)
        assert head.status_code == 200
        different = {"date", "x-request-id"}
        assert [h for h in head.headers.multi_items() if h[0] not in different] == [
            h for h in get.headers.multi_items() if h[0] not in different
        ]
        assert int(head.headers["content-length"]) == len(get.content) > 0
        assert head.content == b""


def test_openapi_says_what_validation_enforces(api: Api) -> None:
    schema = api.anonymous().get("/v1/tasks/openapi.json").json()
    components = schema["components"]["schemas"]
    patch = components["TaskUpdate"]["properties"]
    # Absent means unchanged; null would remove a required field, which is a 422.
    for name in ("title", "completed", "priority", "tags"):
        assert "anyOf" not in patch[name], name
    assert patch["description"]["anyOf"][1] == {"type": "null"}
    create = components["TaskCreate"]["properties"]
    assert create["tags"]["uniqueItems"] is True
    title_pattern = re.compile(create["title"]["pattern"])
    assert title_pattern.search("a title") and title_pattern.search("  x  ")
    assert not title_pattern.search(" \u3000\t") and not title_pattern.search("a\x00b")
    description_pattern = re.compile(create["description"]["anyOf"][0]["pattern"])
    assert description_pattern.search("") and not description_pattern.search("\x00")
    (completed,) = schema["paths"]["/v1/tasks"]["delete"]["parameters"]
    assert completed["required"] and completed["schema"]["enum"] == [True]
