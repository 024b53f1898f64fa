"""TaskFront answers the plain list and get exactly as the routes do, and declines the rest."""

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
    original = TaskFront._answered

    async def spy(self: TaskFront, scope: Any, receive: Any, send: Any) -> bool:
        result = await original(self, scope, receive, send)
        if scope["path"].startswith("/v1/tasks"):
            seen.append((f"{scope['path']}?{scope['query_string'].decode()}", result))
        return result

    monkeypatch.setattr(TaskFront, "_answered", spy)
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
