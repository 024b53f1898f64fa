"""GET /v1/tasks: every filter and sort order, keyset pages, the Link header, the total."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from urllib.parse import parse_qs, urlsplit

import pytest

from taskstack.tasks.listing import SortKey
from tests.tasks.conftest import UserClient, both_entries, new_task


@both_entries
def tasks_front(request: pytest.FixtureRequest) -> bool:
    """Every test here runs against both entries: TaskFront and the FastAPI routes."""
    return bool(request.param)


Task = dict[str, Any]

NOW = datetime.now(UTC)


def when(days: float) -> str:
    return (NOW + timedelta(days=days)).isoformat()


def collect(client: UserClient, limit: int = 3, **query: Any) -> list[Task]:
    """Every page of a query, checking that Link and next_cursor agree."""
    items: list[Task] = []
    params: dict[str, Any] = {**query, "limit": limit}
    for _ in range(100):
        response = client.get("/v1/tasks", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        if page["next_cursor"] is None:
            assert "link" not in response.headers
            return items
        link = response.headers["link"]
        assert link.startswith("</v1/tasks?") and link.endswith('>; rel="next"')
        next_query = parse_qs(urlsplit(link[1 : link.index(">")]).query)
        assert next_query["cursor"] == [page["next_cursor"]]
        assert next_query["limit"] == [str(limit)]
        params = {**query, "limit": limit, "cursor": page["next_cursor"]}
    raise AssertionError("too many pages")


@pytest.fixture
def tasks(alice: UserClient, bob: UserClient) -> list[Task]:
    """Eleven tasks of alice's with ties, nulls and mixed case; one of bob's."""
    specs: list[dict[str, Any]] = [
        {"title": "buy milk", "priority": "high", "tags": ["home", "shop"], "due_at": when(1)},
        {"title": "Buy bread", "priority": "high", "tags": ["shop"], "due_at": when(-1)},
        {"title": "call mom", "description": "about the 50% discount", "due_at": when(-2)},
        {"title": "file taxes", "priority": "low", "tags": ["admin"], "due_at": when(30)},
        {"title": "buy milk", "completed": True, "tags": ["home"], "due_at": when(-3)},
        {"title": "écrire", "priority": "low", "description": "Lettre à Zoé"},
        {"title": "water plants", "tags": ["home"]},
        {"title": "under_score", "priority": "high", "due_at": when(1)},
        {"title": "Zebra", "completed": True},
        {"title": "a", "description": "MILK run", "due_at": when(5)},
        {"title": "b", "priority": "low", "tags": ["home", "admin"], "due_at": when(-5)},
    ]
    created = [new_task(alice, **spec) for spec in specs]
    new_task(bob, title="buy milk", tags=["home"])
    # Touch some tasks so that updated_at order differs from created_at order.
    for index in (3, 0, 7):
        response = alice.patch(f"/v1/tasks/{created[index]['id']}", json={"description": "x"})
        created[index] = response.json()
    return created


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def ordered(tasks: list[Task], sort: str) -> list[str]:
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    rank = {"low": 0, "normal": 1, "high": 2}

    def sort_value(task: Task) -> Any:
        if key == "priority":
            return rank[task["priority"]]
        if key == "title":
            return task["title"]
        if key == "due_at":
            missing = task["due_at"] is None
            # nulls last in both directions
            return (missing != descending, ts(task["due_at"]) if not missing else NOW)
        return ts(task[key])

    result = sorted(tasks, key=lambda t: (sort_value(t), uuid.UUID(t["id"])), reverse=descending)
    return [task["id"] for task in result]


SORTS = list(get_args(SortKey))


@pytest.mark.parametrize("sort", SORTS)
def test_each_sort_order_pages_through_every_task_once(
    alice: UserClient, tasks: list[Task], sort: str
) -> None:
    listed = collect(alice, sort=sort)
    assert [task["id"] for task in listed] == ordered(tasks, sort)


def test_the_default_order_is_newest_first(alice: UserClient, tasks: list[Task]) -> None:
    page = alice.get("/v1/tasks").json()
    assert [t["id"] for t in page["items"]] == ordered(tasks, "-created_at")
    assert page["next_cursor"] is None and page["total"] is None


def test_due_at_puts_tasks_without_a_due_time_last_both_ways(
    alice: UserClient, tasks: list[Task]
) -> None:
    for sort in ("due_at", "-due_at"):
        dues = [task["due_at"] for task in collect(alice, sort=sort)]
        assert dues[-3:] == [None, None, None] and None not in dues[:-3]


def test_title_sorts_by_code_point(alice: UserClient, tasks: list[Task]) -> None:
    titles = [task["title"] for task in collect(alice, limit=100, sort="title")]
    assert titles == sorted(titles)
    assert titles.index("Zebra") < titles.index("a") < titles.index("écrire")


Predicate = Callable[[Task], bool]

FILTERS: list[tuple[dict[str, Any], Predicate]] = [
    ({"completed": "true"}, lambda t: t["completed"]),
    ({"completed": "false"}, lambda t: not t["completed"]),
    ({"priority": "high"}, lambda t: t["priority"] == "high"),
    ({"priority": ["high", "low"]}, lambda t: t["priority"] in ("high", "low")),
    ({"tag": "home"}, lambda t: "home" in t["tags"]),
    ({"tag": ["home", "shop"]}, lambda t: {"home", "shop"} <= set(t["tags"])),
    ({"tag": "nothing"}, lambda t: False),
    ({"due_before": when(0)}, lambda t: t["due_at"] is not None and ts(t["due_at"]) < NOW),
    (
        {"due_after": when(1)},
        lambda t: t["due_at"] is not None and ts(t["due_at"]) >= NOW + timedelta(days=1),
    ),
    (
        {"due_after": when(-2.5), "due_before": when(2)},
        lambda t: (
            t["due_at"] is not None
            and NOW - timedelta(days=2.5) <= ts(t["due_at"]) < NOW + timedelta(days=2)
        ),
    ),
    (
        {"overdue": "true"},
        lambda t: not t["completed"] and t["due_at"] is not None and ts(t["due_at"]) < NOW,
    ),
    (
        {"overdue": "false"},
        lambda t: t["completed"] or t["due_at"] is None or ts(t["due_at"]) >= NOW,
    ),
    ({"q": "milk"}, lambda t: "milk" in t["title"] or "milk" in (t["description"] or "").lower()),
    ({"q": "BUY"}, lambda t: t["title"].lower().startswith("buy")),
    ({"q": "zoé"}, lambda t: t["title"] == "écrire"),
    ({"q": "50%"}, lambda t: t["title"] == "call mom"),
    ({"q": "%"}, lambda t: t["title"] == "call mom"),
    ({"q": "_"}, lambda t: t["title"] == "under_score"),
    ({"q": "u_d"}, lambda t: False),  # _ is not a wildcard
    (
        {"completed": "false", "priority": "high", "tag": "shop", "q": "b"},
        lambda t: t["title"] in ("buy milk", "Buy bread") and not t["completed"],
    ),
]


@pytest.mark.parametrize(("query", "predicate"), FILTERS, ids=[str(q) for q, _ in FILTERS])
def test_filters(
    alice: UserClient, tasks: list[Task], query: dict[str, Any], predicate: Predicate
) -> None:
    matching = [task for task in tasks if predicate(task)]
    for sort in ("-created_at", "due_at", "-priority", "title"):
        listed = collect(alice, limit=2, sort=sort, **query)
        assert [task["id"] for task in listed] == ordered(matching, sort), sort
    total = alice.get("/v1/tasks", params={**query, "include_total": "true", "limit": 1})
    assert total.json()["total"] == len(matching)


def test_a_cursor_survives_a_change_of_page_size(alice: UserClient, tasks: list[Task]) -> None:
    first = alice.get("/v1/tasks", params={"limit": 4}).json()
    rest = collect(alice, limit=100, cursor=first["next_cursor"])
    assert [t["id"] for t in first["items"] + rest] == ordered(tasks, "-created_at")


def test_the_link_keeps_every_filter(alice: UserClient, tasks: list[Task]) -> None:
    response = alice.get(
        "/v1/tasks", params={"tag": "home", "priority": ["high", "normal"], "limit": 1}
    )
    link = response.headers["link"]
    query = parse_qs(urlsplit(link[1 : link.index(">")]).query)
    assert query["tag"] == ["home"] and query["priority"] == ["high", "normal"]
    following = alice.get(link[1 : link.index(">")])
    assert following.status_code == 200
    assert following.json()["items"][0]["id"] != response.json()["items"][0]["id"]


def test_an_empty_list(alice: UserClient) -> None:
    response = alice.get("/v1/tasks", params={"include_total": "true"})
    assert response.json() == {"items": [], "next_cursor": None, "total": 0}
    assert "link" not in response.headers


def test_exactly_one_full_page_has_no_next_cursor(alice: UserClient) -> None:
    for n in range(3):
        new_task(alice, title=str(n))
    page = alice.get("/v1/tasks", params={"limit": 3}).json()
    assert len(page["items"]) == 3 and page["next_cursor"] is None


def test_cursors_carry_the_longest_titles(alice: UserClient) -> None:
    titles = [chr(0x1F600 + n) * 200 for n in range(3)]  # 200 four-byte characters each
    for title in titles:
        new_task(alice, title=title)
    for sort in ("title", "-title"):
        listed = collect(alice, limit=1, sort=sort)
        assert [task["title"] for task in listed] == sorted(titles, reverse=sort == "-title")
