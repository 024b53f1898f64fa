"""At 200,000 tasks across 1,000 users, list queries still read only the caller's rows.

Two scratch databases, migrated like production: one with 2,000 tasks (10
users), one with 200,000 (1,000 users), 200 tasks per user in both. On the
large one, EXPLAIN ANALYZE of every main list variant (first page and after a
cursor) must show no sequential scan of tasks.task, and every index scan must
be bounded by owner_id and return at most the caller's 200 rows, so none
walks other users' entries. And the first page for a user must come back as
fast with 200,000 rows as with 2,000: within FACTOR, comparing medians of
alternating requests.
"""

import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, get_args

import httpx
import psycopg
import pytest
from sqlalchemy.engine import URL

from taskstack.common.migrations import upgrade
from taskstack.tasks.cursor import Position
from taskstack.tasks.listing import SortKey, TaskListParams, page_query
from taskstack.tasks.main import create_app
from taskstack.tasks.migrate import HISTORY
from tests.support.postgres import PostgresServer
from tests.support.servers import serve
from tests.support.tokens import TokenMint
from tests.tasks.conftest import tasks_settings

pytestmark = [pytest.mark.scale, pytest.mark.timeout(600)]

TASKS_PER_USER = 200
SMALL_USERS = 10
LARGE_USERS = 1_000
FACTOR = 3.0
SAMPLES = 41

LOAD = """
INSERT INTO tasks.task (id, owner_id, title, description, completed, completed_at,
                        priority, due_at, tags, created_at, updated_at)
SELECT gen_random_uuid(),
       md5('user' || u)::uuid,
       'task ' || n || ' of user ' || u || ' ' || left(md5(u || ':' || n), 8),
       CASE WHEN n %% 3 = 0 THEN 'notes ' || md5(n || ':' || u) END,
       n %% 4 = 0,
       CASE WHEN n %% 4 = 0 THEN now() END,
       n %% 3,
       CASE WHEN n %% 5 <> 0 THEN now() + ((n * 7 + u) %% 60 - 30) * interval '1 day' END,
       ARRAY['tag' || (n %% 10), 'topic' || ((n + u) %% 7)],
       now() - (n * 1000 + u) * interval '1 second',
       now() - (n * 500 + u) * interval '1 second'
FROM generate_series(%(first_user)s::int, %(last_user)s::int) AS u,
     generate_series(1, %(per_user)s::int) AS n
"""


def user_id(number: int) -> uuid.UUID:
    """The owner id LOAD gives user ``number``: md5('user' || number)::uuid."""
    import hashlib

    return uuid.UUID(hashlib.md5(f"user{number}".encode()).hexdigest())  # noqa: S324


def loaded_database(postgres: PostgresServer, users: int) -> URL:
    url = postgres.create_database("taskstack_scale")
    upgrade(url, HISTORY)
    started = time.perf_counter()
    with psycopg.connect(postgres.libpq(url), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(LOAD, {"first_user": 1, "last_user": users, "per_user": TASKS_PER_USER})
        conn.execute("VACUUM ANALYZE tasks.task")
        count = conn.execute("SELECT count(*) FROM tasks.task").fetchone()
    print(f"loaded {count[0] if count else 0} tasks in {time.perf_counter() - started:.1f} s")
    return url


@pytest.fixture(scope="module")
def small_database(postgres: PostgresServer) -> URL:
    return loaded_database(postgres, SMALL_USERS)


@pytest.fixture(scope="module")
def large_database(postgres: PostgresServer) -> URL:
    return loaded_database(postgres, LARGE_USERS)


OWNER = user_id(1)
VARIANTS: list[dict[str, Any]] = [
    *({"sort": sort} for sort in get_args(SortKey)),
    {"completed": False},
    {"completed": True, "sort": "-due_at"},
    {"priority": ["high"], "sort": "title"},
    {"tag": ["tag3"]},
    {"tag": ["tag3", "topic2"], "sort": "priority"},
    {"due_before": datetime(2040, 1, 1, tzinfo=UTC), "due_after": datetime(2020, 1, 1, tzinfo=UTC)},
    {"overdue": True, "sort": "due_at"},
    {"q": "notes"},
    {"q": "of user 1 "},
    {"q": "zz", "sort": "-updated_at"},
    {
        "completed": False,
        "priority": ["high", "normal"],
        "tag": ["tag1"],
        "q": "task",
        "sort": "-due_at",
    },
]


def plan(dsn: str, variant: dict[str, Any], *, second_page: bool) -> dict[str, Any]:
    params = TaskListParams.model_validate(variant)
    with psycopg.connect(dsn) as conn:
        after = None
        if second_page:
            # A cursor position in the middle of the user's tasks, as a real one would be.
            key = params.sort.removeprefix("-")
            middle = conn.execute(
                f"SELECT {key}, id FROM tasks.task WHERE owner_id = %s ORDER BY id OFFSET 100",  # noqa: S608
                (OWNER,),
            ).fetchone()
            assert middle is not None
            after = Position(middle[0], middle[1])
        statement, values = page_query(OWNER, params, after)
        explain = f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.sql}"
        row = conn.execute(explain, statement.values(values)).fetchone()
    assert row is not None
    document: dict[str, Any] = row[0][0]["Plan"]
    return document


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


@pytest.mark.parametrize("second_page", [False, True], ids=["first page", "after a cursor"])
def test_no_list_variant_scans_the_table(
    postgres: PostgresServer, large_database: URL, second_page: bool
) -> None:
    dsn = postgres.libpq(large_database)
    for variant in VARIANTS:
        top = plan(dsn, variant, second_page=second_page)
        scans = [n for n in nodes(top) if n.get("Relation Name") == "task" or "Index Name" in n]
        kinds = {n["Node Type"] for n in scans}
        index_scans = [n for n in scans if "Index Name" in n]
        indexes = sorted({n["Index Name"] for n in index_scans})
        most_rows = max(n["Actual Rows"] for n in index_scans) if index_scans else None
        print(f"{variant}: {sorted(kinds)} via {indexes}, at most {most_rows} index rows")
        assert "Seq Scan" not in kinds, (variant, top)
        assert index_scans, (variant, top)
        for scan in index_scans:
            assert "owner_id = " in scan.get("Index Cond", ""), (variant, scan)
            assert scan["Actual Rows"] <= TASKS_PER_USER, (variant, scan)


def first_page_ms(client: httpx.Client, query: dict[str, str]) -> float:
    started = time.perf_counter()
    response = client.get("/v1/tasks", params=query)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200 and len(response.json()["items"]) == 20
    return elapsed


def test_the_first_page_is_as_fast_with_200k_rows_as_with_2k(
    small_database: URL, large_database: URL, jwks_url: str, mint: TokenMint
) -> None:
    headers = {"Authorization": f"Bearer {mint.token(OWNER)}"}
    small_app = create_app(tasks_settings(small_database, jwks_url))
    large_app = create_app(tasks_settings(large_database, jwks_url))
    with (
        serve(small_app) as small_url,
        serve(large_app) as large_url,
        httpx.Client(base_url=small_url, headers=headers) as small,
        httpx.Client(base_url=large_url, headers=headers) as large,
    ):
        for query in ({}, {"sort": "due_at", "tag": "tag3"}, {"q": "notes", "completed": "false"}):
            for _ in range(5):  # warm up both: connections, caches, plans
                first_page_ms(small, query)
                first_page_ms(large, query)
            # Alternate, so that both see the same load from the rest of the machine.
            small_ms, large_ms = [], []
            for _ in range(SAMPLES):
                small_ms.append(first_page_ms(small, query))
                large_ms.append(first_page_ms(large, query))
            small_median = statistics.median(small_ms)
            large_median = statistics.median(large_ms)
            print(
                f"first page {query or '(default)'}: {small_median:.1f} ms with 2,000 rows, "
                f"{large_median:.1f} ms with 200,000 rows "
                f"({large_median / small_median:.2f}x, limit {FACTOR}x, median of {SAMPLES})"
            )
            assert large_median <= FACTOR * small_median
