"""TaskFront answers the plain list and get exactly as the routes do, and declines the rest."""

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import URL

from taskstack.tasks.front import TaskFront
from taskstack.tasks.main import create_app
from tests.support.servers import serve
from tests.support.tokens import TokenMint
from tests.tasks.conftest import Api, UserClient, new_task, tasks_settings

# What differs between any two answers, whoever gives them.
VARYING_HEADERS = {"date", "x-request-id"}


@pytest.fixture(scope="module")
def routes_url(migrated_database: URL, jwks_url: str) -> Iterator[str]:
    """The same service with TASKS_FRONT off: every request through the FastAPI routes."""
    settings = tasks_settings(migrated_database, jwks_url, tasks_front=False)
    with serve(create_app(settings)) as base_url:
        yield base_url


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Each request TaskFront saw (path and query), and whether it answered it."""
    seen: list[tuple[str, bool]] = []
    original = TaskFront._answer

    async def spy(self: TaskFront, scope: Any, receive: Any, send: Any) -> Any:
        declined = await original(self, scope, receive, send)
        if scope["path"].startswith("/v1/tasks"):
            seen.append((f"{scope['path']}?{scope['query_string'].decode()}", declined is None))
        return declined

    monkeypatch.setattr(TaskFront, "_answer", spy)
    return seen


def comparable(response: httpx.Response) -> tuple[int, list[tuple[str, str]], Any]:
    """What must be the same whoever answers (a redirect names its server's own port)."""
    base = str(response.request.url.copy_with(path="/", query=None)).rstrip("/")
    headers = [
        (k, v.replace(base, "<base>"))
        for k, v in response.headers.multi_items()
        if k not in VARYING_HEADERS
    ]
    body: Any = response.content
    if response.headers.get("content-type") == "application/problem+json":
        body = {k: v for k, v in response.json().items() if k != "request_id"}
    return response.status_code, headers, body


Spec = tuple[str, str, Any, bool]  # method, URL, headers, whether the front answers it


def requests_for(
    task_id: str, etag: str, cursor: str, mint: TokenMint, owner: uuid.UUID
) -> list[Spec]:
    token = mint.token(owner)
    bearer = {"Authorization": f"Bearer {token}"}
    item = f"/v1/tasks/{task_id}"
    stranger = {"Authorization": f"Bearer {mint.token(uuid.uuid4())}"}
    return [
        ("GET", "/v1/tasks", bearer, True),
        ("GET", "/v1/tasks?limit=2", bearer, True),
        ("GET", "/v1/tasks?limit=100", bearer, True),
        ("GET", "/v1/tasks", {"Authorization": f"bEaReR   {token}"}, True),
        ("GET", "/v1/tasks", stranger, True),
        ("HEAD", "/v1/tasks", bearer, True),
        ("GET", "/v1/tasks?limit=0", bearer, False),
        ("GET", "/v1/tasks?limit=101", bearer, False),
        ("GET", "/v1/tasks?limit=02", bearer, False),
        ("GET", "/v1/tasks?limit=2&limit=3", bearer, False),
        ("GET", f"/v1/tasks?cursor={cursor}", bearer, True),
        ("GET", f"/v1/tasks?cursor={cursor}&limit=3", bearer, True),
        ("GET", f"/v1/tasks?limit=3&cursor={cursor}", bearer, True),
        ("GET", f"/v1/tasks?cursor={cursor[:-2]}AA", bearer, True),
        ("GET", f"/v1/tasks?cursor={cursor}", stranger, True),
        ("GET", "/v1/tasks?cursor=", bearer, False),
        ("GET", f"/v1/tasks?cursor={cursor}&cursor={cursor}", bearer, False),
        ("GET", f"/v1/tasks?cursor={cursor}%3D", bearer, False),
        ("GET", f"/v1/tasks?cursor={cursor}&sort=title", bearer, False),
        ("GET", "/v1/tasks?limit=", bearer, False),
        ("GET", "/v1/tasks?sort=title", bearer, False),
        ("GET", "/v1/tasks?unknown=1", bearer, False),
        ("GET", "/v1/tasks/", bearer, False),
        ("GET", "/v1/tasks", {}, False),
        ("GET", "/v1/tasks", {"Authorization": "Bearer not.a.token"}, False),
        ("GET", "/v1/tasks", {"Authorization": "Bearer"}, False),
        ("GET", "/v1/tasks", {"Authorization": f"Basic {token}"}, False),
        ("GET", "/v1/tasks", [("Authorization", f"Bearer {token}")] * 2, False),
        ("GET", item, bearer, True),
        ("GET", item, {**bearer, "If-None-Match": etag}, True),
        ("GET", item, {**bearer, "If-None-Match": f"W/{etag}"}, True),
        ("GET", item, {**bearer, "If-None-Match": f'"999", {etag}'}, True),
        ("GET", item, {**bearer, "If-None-Match": '"999"'}, True),
        ("GET", item, {**bearer, "If-None-Match": "*"}, True),
        ("GET", item, {**bearer, "If-None-Match": ""}, True),
        ("GET", f"{item}?x=1", bearer, True),
        ("GET", item, stranger, True),
        ("GET", f"/v1/tasks/{uuid.uuid4()}", bearer, True),
        ("HEAD", item, bearer, True),
        ("GET", item, {**bearer, "If-None-Match": "x" * 5000}, False),
        ("GET", item, [*bearer.items(), ("If-None-Match", etag), ("If-None-Match", "x")], False),
        ("GET", f"/v1/tasks/{task_id.upper()}", bearer, False),
        ("GET", f"/v1/tasks/{task_id.replace('-', '')}", bearer, False),
        ("GET", "/v1/tasks/not-a-uuid", bearer, False),
        ("GET", item, {}, False),
    ]


def test_the_front_and_the_routes_answer_alike(
    alice: UserClient, api: Api, routes_url: str, answered: list[tuple[str, bool]]
) -> None:
    tasks = [new_task(alice, title=f"task {n} é", tags=["x"]) for n in range(25)]
    first = alice.get(f"/v1/tasks/{tasks[0]['id']}")
    cursor = alice.get("/v1/tasks?limit=2").json()["next_cursor"]
    specs = requests_for(tasks[0]["id"], first.headers["etag"], cursor, api.mint, alice.subject)
    with (
        httpx.Client(base_url=api.base_url, timeout=30) as front,
        httpx.Client(base_url=routes_url, timeout=30) as routes,
    ):
        for method, url, headers, served in specs:
            answered.clear()
            by_front = front.request(method, url, headers=headers)
            by_routes = routes.request(method, url, headers=headers)
            assert comparable(by_front) == comparable(by_routes), (method, url, headers)
            assert [result for _, result in answered] == [served], (method, url, headers)


def test_a_request_the_front_answers_is_measured_under_its_route(alice: UserClient) -> None:
    task = new_task(alice)

    def count(route: str) -> float:
        labels = {"service": "tasks", "route": route, "method": "GET", "status": "200"}
        return (
            REGISTRY.get_sample_value("taskstack_http_request_duration_seconds_count", labels)
            or 0.0
        )

    before = count("/v1/tasks"), count("/v1/tasks/{task_id}")
    assert alice.get("/v1/tasks").status_code == 200
    assert alice.get(f"/v1/tasks/{task['id']}").status_code == 200
    assert (count("/v1/tasks"), count("/v1/tasks/{task_id}")) == (before[0] + 1, before[1] + 1)


# What two writes of the same request differ in: the new task's id, and the times.
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NOW = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def masked(response: httpx.Response) -> tuple[int, list[tuple[str, str]], str]:
    """A write's answer with its ids and times masked, so two entries' writes compare."""
    status, headers, body = comparable(response)
    text = body.decode() if isinstance(body, bytes) else repr(body)

    def mask(value: str) -> str:
        return _NOW.sub("<time>", _ID.sub("<id>", value))

    return status, [(k, mask(v)) for k, v in headers], mask(text)


WriteSpec = tuple[str, str, list[tuple[str, str]], Any, bool]


def writes_for(mint: TokenMint, owner: uuid.UUID) -> list[WriteSpec]:
    """Method, path ({id}: a fresh task of the owner's), headers, body (bytes, or a list
    of chunks sent without a Content-Length), whether the front answers it."""
    token = mint.token(owner)
    bearer = [("Authorization", f"Bearer {token}")]
    json = [*bearer, ("Content-Type", "application/json")]
    merge = [*bearer, ("Content-Type", "application/merge-patch+json")]
    task = b'{"title": "milk", "priority": "high", "due_at": "2030-01-01T09:00:00+01:00"}'
    key = "{key}"  # one per entry, the same for each of its requests
    item = "/v1/tasks/{id}"
    return [
        ("POST", "/v1/tasks", json, task, True),
        ("POST", "/v1/tasks", json, b'{"title": "a", "title": " b ", "tags": ["x"]}', True),
        ("POST", "/v1/tasks", json, b'{"title": "done", "completed": true}', True),
        ("POST", "/v1/tasks", [*json, ("Idempotency-Key", key)], task, True),
        # The same key again: the stored answer, replayed by whoever answers.
        ("POST", "/v1/tasks", [*json, ("Idempotency-Key", key)], task, True),
        ("POST", "/v1/tasks", [*json, ("Idempotency-Key", key)], b'{"title": "x"}', True),
        ("POST", "/v1/tasks", [*json, ("Idempotency-Key", "a key")], task, False),
        ("POST", "/v1/tasks", [*json, ("Idempotency-Key", "x" * 256)], task, False),
        (
            "POST",
            "/v1/tasks",
            [*bearer, ("Content-Type", "application/json; charset=utf-8")],
            task,
            False,
        ),
        ("POST", "/v1/tasks", [*bearer, ("Content-Type", "text/plain")], task, False),
        ("POST", "/v1/tasks", bearer, task, False),
        ("POST", "/v1/tasks", [*json, ("Content-Type", "application/json")], task, False),
        ("POST", "/v1/tasks", json, [task[:10], task[10:]], False),
        ("POST", "/v1/tasks", json, b'{"title": ""}', False),
        ("POST", "/v1/tasks", json, b'{"title": "x", "owner_id": "me"}', False),
        ("POST", "/v1/tasks", json, b'{"title": "\\ud800"}', False),
        ("POST", "/v1/tasks", json, b'{"title": "x", "completed": 1}', False),
        ("POST", "/v1/tasks", json, b'{"title": "x"', False),
        ("POST", "/v1/tasks", json, b"", False),
        ("POST", "/v1/tasks", json, b'["x"]', False),
        ("POST", "/v1/tasks?x=1", json, task, False),
        ("POST", "/v1/tasks", [("Content-Type", "application/json")], task, False),
        (
            "POST",
            "/v1/tasks",
            [("Authorization", "Bearer x.y.z"), ("Content-Type", "application/json")],
            task,
            False,
        ),
        ("PATCH", item, merge, b'{"completed": true}', True),
        ("PATCH", item, json, b'{"title": "new", "due_at": null, "tags": ["a", "b"]}', True),
        ("PATCH", item, [*merge, ("If-Match", '"1"')], b'{"priority": "low"}', True),
        ("PATCH", item, [*merge, ("If-Match", '"7", W/"1"')], b'{"priority": "low"}', True),
        ("PATCH", item, [*merge, ("If-Match", "*")], b"{}", True),
        ("PATCH", f"/v1/tasks/{uuid.uuid4()}", merge, b'{"title": "x"}', True),
        ("PATCH", item, [*merge, ("If-Match", "x" * 5000)], b'{"title": "x"}', False),
        ("PATCH", item, [*merge, ("If-Match", '"1"'), ("If-Match", '"2"')], b"{}", False),
        ("PATCH", item, merge, b'{"title": null}', False),
        ("PATCH", item, merge, b'{"title": "x", "version": 3}', False),
        ("PATCH", item, merge, b"{", False),
        ("PATCH", item, [*bearer, ("Content-Type", "application/xml")], b"{}", False),
        ("PATCH", item + "?x=1", merge, b"{}", False),
        ("PATCH", item.replace("{id}", "{ID}"), merge, b"{}", False),
        ("PATCH", item, [("Content-Type", "application/merge-patch+json")], b"{}", False),
    ]


def test_the_front_and_the_routes_write_alike(
    alice: UserClient, api: Api, routes_url: str, answered: list[tuple[str, bool]]
) -> None:
    with (
        httpx.Client(base_url=api.base_url, timeout=30) as front,
        httpx.Client(base_url=routes_url, timeout=30) as routes,
    ):
        keys = {front: f"key-{uuid.uuid4()}", routes: f"key-{uuid.uuid4()}"}
        for method, path, spec_headers, body, served in writes_for(api.mint, alice.subject):
            answers = []
            for client in (front, routes):
                headers = [(k, v.replace("{key}", keys[client])) for k, v in spec_headers]
                # Each entry writes to a task of its own, created alike.
                task_id = new_task(alice, title="to change", tags=["t"])["id"]
                url = path.replace("{id}", task_id).replace("{ID}", task_id.upper())
                answered.clear()
                # Chunks: a body sent without a Content-Length.
                content = iter(body) if isinstance(body, list) else body
                answers.append(client.request(method, url, headers=headers, content=content))
                if client is front:
                    assert [result for _, result in answered] == [served], (method, path, headers)
            by_front, by_routes = answers
            assert masked(by_front) == masked(by_routes), (method, path, headers, body)
            assert by_front.status_code < 500, by_front.text
