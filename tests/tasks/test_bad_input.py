"""Malformed requests answer 4xx problem+json and leave the database as it was."""

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.tasks.conftest import Database, UserClient, both_entries, new_task


@both_entries
def tasks_front(request: pytest.FixtureRequest) -> bool:
    """Every test here runs against both entries: TaskFront and the FastAPI routes."""
    return bool(request.param)


PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text and "psycopg" not in response.text
    return body


def post_raw(client: UserClient, body: bytes, path: str = "/v1/tasks") -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "body",
    [
        {"title": 5},
        {"title": None},
        {"title": ["a"]},
        {"title": {"a": 1}},
        {"title": "t", "completed": "true"},
        {"title": "t", "priority": 1},
        {"title": "t", "tags": "a,b"},
        {"title": "t", "tags": [None]},
        {"title": "t", "due_at": 1_900_000_000},
        {"title": "t", "description": 3},
        {"title": "nul \x00 byte"},
        {"title": "t", "description": "\x00"},
        {"title": "t", "tags": ["\x00"]},
        {"title": "t", "due_at": "2030-01-01T00:00:00"},
        {"title": "t", "due_at": "next tuesday"},
        {"title": "t", "due_at": "2030-02-30T00:00:00Z"},
        {"title": "t", "id": str(uuid.uuid4())},
        {"title": "t", "version": 9},
        {"title": "t", "created_at": "2030-01-01T00:00:00Z"},
        {"title": "t", "owner": str(uuid.uuid4())},
        {"title": "t", "color": "red"},
        {},
    ],
)
def test_invalid_bodies_are_422(alice: UserClient, db: Database, body: dict[str, Any]) -> None:
    problem = assert_problem(alice.post("/v1/tasks", json=body), 422)
    assert problem["errors"]
    assert db.task_count() == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "\\u0000"}',  # NUL, as PostgreSQL would refuse it
        b'{"title": "\\ud800"}',  # a lone high surrogate
        b'{"title": "ok \\udc00 no"}',  # a lone low surrogate
        b'{"title": "t", "tags": ["\\ud83d"]}',
        b'{"title": "\xed\xa0\x80"}',  # a surrogate encoded as if UTF-8 (CESU-8)
        b'{"title": "t"',  # truncated JSON
        b'{"title": "t",}',
        b"",
    ],
)
def test_nul_surrogates_and_broken_json_are_422(
    alice: UserClient, db: Database, raw: bytes
) -> None:
    assert_problem(post_raw(alice, raw), 422)
    assert db.task_count() == 0


def test_a_paired_surrogate_escape_is_a_real_character(alice: UserClient) -> None:
    response = post_raw(alice, b'{"title": "party \\ud83c\\udf89"}')
    assert response.status_code == 201 and response.json()["title"] == "party \U0001f389"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"title": "\xff\xfe bad utf-8"}',
        b'{"title": "\xc3\x28"}',
        b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's limit
    ],
)
def test_undecodable_or_too_deep_bodies_are_400(
    alice: UserClient, db: Database, raw: bytes
) -> None:
    assert_problem(post_raw(alice, raw), 400)
    assert db.task_count() == 0


def test_moderately_nested_json_is_a_422_not_a_crash(alice: UserClient, db: Database) -> None:
    nested = json.dumps({"title": "t", "tags": [[[[[[["deep"]]]]]]]}).encode()
    assert_problem(post_raw(alice, nested), 422)
    assert db.task_count() == 0


def test_a_10_mb_body_is_413(alice: UserClient, db: Database) -> None:
    body = json.dumps({"title": "t", "description": "x" * 10_000_000}).encode()
    assert_problem(post_raw(alice, body), 413)
    assert db.task_count() == 0


def test_writes_with_bad_bodies_leave_the_task_alone(alice: UserClient, db: Database) -> None:
    task = new_task(alice)
    url = f"/v1/tasks/{task['id']}"
    assert_problem(alice.put(url, json={"title": "\x00"}), 422)
    assert_problem(alice.put(url, json={"title": "t", "version": 5}), 422)
    assert_problem(alice.patch(url, json={"title": None}), 422)
    assert_problem(alice.patch(url, json={"id": str(uuid.uuid4())}), 422)
    assert_problem(alice.patch(url, json={"due_at": "2030-01-01"}), 422)
    assert db.rows("SELECT title, version FROM tasks.task") == [("a task", 1)]


@pytest.mark.parametrize("task_id", ["not-a-uuid", "1", "' OR 1=1 --", "%00", "0" * 33])
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_a_non_uuid_id_is_422(alice: UserClient, task_id: str, method: str) -> None:
    response = alice.request(method, f"/v1/tasks/{task_id}", json={"title": "t"})
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["loc"] == ["path", "task_id"]


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "101"},
        {"limit": "99999999999999999999999999"},
        {"limit": "ten"},
        {"sort": "owner_id"},
        {"sort": "created_at; DROP TABLE tasks.task"},
        {"sort": "--created_at"},
        {"priority": "urgent"},
        {"completed": "maybe"},
        {"overdue": "soon"},
        {"due_before": "yesterday"},
        {"due_after": "2030-01-01T00:00:00"},
        {"due_after": "2030-01-01"},
        {"q": "\x00"},
        {"q": ""},
        {"q": "x" * 201},
        {"tag": "\x00"},
        {"tag": "x" * 33},
        {"include_total": "sure"},
        {"unknown": "1"},
        {"cursor": "x" * 5000},
    ],
)
def test_invalid_list_parameters_are_422(alice: UserClient, query: dict[str, str]) -> None:
    assert_problem(alice.get("/v1/tasks", params=query), 422)


def test_an_offset_whose_plus_was_not_encoded_gets_told_to_send_2b(alice: UserClient) -> None:
    # As typed into a URL: the query string turns the unencoded + into a space.
    response = alice.get("/v1/tasks?due_before=2026-01-01T00:00:00+02:00")
    [error] = assert_problem(response, 422)["errors"]
    assert error["loc"] == ["query", "due_before"]
    assert "%2B" in error["msg"] and "Z" in error["msg"]
    encoded = alice.get("/v1/tasks?due_before=2026-01-01T00:00:00%2B02:00")
    assert encoded.status_code == 200


def test_a_date_filter_that_is_no_date_gets_an_example(alice: UserClient) -> None:
    response = alice.get("/v1/tasks", params={"due_after": "next tuesday"})
    [error] = assert_problem(response, 422)["errors"]
    assert error["loc"] == ["query", "due_after"]
    assert "for example 2026-01-31T09:00:00Z" in error["msg"]
    assert "%2B" not in error["msg"]
    assert alice.get("/v1/tasks", params={"due_after": "2026-01-31T09:00:00Z"}).status_code == 200


def test_too_many_tag_filters_are_422(alice: UserClient) -> None:
    query = {"tag": [f"t{n}" for n in range(21)]}
    assert_problem(alice.get("/v1/tasks", params=query), 422)


@pytest.mark.parametrize("key", ["", "k" * 256, "with space", "tab\tkey", "caf\u00e9"])
def test_invalid_idempotency_keys_are_422(alice: UserClient, db: Database, key: str) -> None:
    headers = {b"Idempotency-Key": key.encode()}  # raw UTF-8 bytes on the wire
    response = alice.post("/v1/tasks", json={"title": "t"}, headers=headers)
    assert_problem(response, 422)
    assert db.task_count() == 0


def cursor_for(client: UserClient, **query: str) -> str:
    for n in range(3):
        new_task(client, title=f"task {n}")
    cursor: str = client.get("/v1/tasks", params={"limit": "1", **query}).json()["next_cursor"]
    assert cursor
    return cursor


def test_a_modified_cursor_is_400(alice: UserClient) -> None:
    cursor = cursor_for(alice)
    for altered in (
        cursor[:-1],
        cursor + "A",
        cursor[:10] + ("B" if cursor[10] != "B" else "C") + cursor[11:],
        "garbage",
        "e30",
    ):
        problem = assert_problem(alice.get("/v1/tasks", params={"cursor": altered}), 400)
        assert "cursor" in problem["detail"]


@pytest.mark.parametrize(
    "other_query",
    [{"sort": "title"}, {"completed": "false"}, {"q": "task"}, {"priority": "high"}],
)
def test_a_cursor_from_another_query_is_400(alice: UserClient, other_query: dict[str, str]) -> None:
    cursor = cursor_for(alice)
    assert_problem(alice.get("/v1/tasks", params={"cursor": cursor, **other_query}), 400)
    # The page size may change between pages.
    assert alice.get("/v1/tasks", params={"cursor": cursor, "limit": "5"}).status_code == 200
