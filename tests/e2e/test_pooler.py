"""Item 2: behind PgBouncer in transaction mode (Neon's pooled endpoint), everything still works.

Four replicas share four server connections, so consecutive transactions of
one service connection land on different PostgreSQL sessions: a prepared
statement would be missing (or already exist) on the next one.
"""

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack, User, new_user, run_stack
from tests.e2e.journey import run_journey
from tests.e2e.report import Reliability

pytestmark = pytest.mark.e2e

TITLE = "Neon-style pooler (PgBouncer, transaction mode)"
CREATES = 50
# psycopg prepares a statement on its fifth run on a connection: enough
# waves that every pooled connection gets there.
WAVES = 2
RACERS = 20


@pytest.fixture(scope="module")
def pooled(cluster: PrivateCluster) -> Iterator[Stack]:
    with run_stack(
        cluster, pooled=True, pooler_pool_size=4, auth_replicas=2, tasks_replicas=2
    ) as stack:
        yield stack


async def concurrently(
    stack: Stack, user: User, count: int, send: str, path: str, **kwargs: object
) -> list[httpx.Response]:
    """``count`` identical requests released at once through the gateway."""
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def one(n: int) -> httpx.Response:
            await start.wait()
            headers = {**user.headers, **kwargs.get("headers", {})}  # type: ignore[dict-item]
            body = {"title": f"concurrent {n}"}
            return await client.request(send, path, json=body, headers=headers)

        requests = [asyncio.create_task(one(n)) for n in range(count)]
        await asyncio.sleep(0.05)
        start.set()
        return await asyncio.gather(*requests)


def test_the_journey_through_the_pooler(pooled: Stack, reliability: Reliability) -> None:
    journey = run_journey(pooled)
    reliability.record(
        2, TITLE, f"journey {journey.requests} requests, {len(journey.unexpected)} unexpected"
    )
    assert journey.unexpected == []
    assert pooled.pgbouncer is not None
    clients = {
        row["application_name"]
        for row in pooled.pgbouncer.show("CLIENTS")
        if row["database"] == pooled.database.database
    }
    assert {"taskstack-auth", "taskstack-tasks"} <= clients, "the services connect via PgBouncer"


def test_concurrent_writes_through_the_pooler(pooled: Stack, reliability: Reliability) -> None:
    user = new_user(pooled.client(), "pooled")
    created = [
        response
        for _ in range(WAVES)
        for response in asyncio.run(concurrently(pooled, user, CREATES, "POST", "/v1/tasks"))
    ]
    created_statuses = Counter(r.status_code for r in created)
    ids = {r.json()["id"] for r in created if r.status_code == 201}

    task = created[0].json()
    racing = asyncio.run(
        concurrently(
            pooled,
            user,
            RACERS,
            "PATCH",
            f"/v1/tasks/{task['id']}",
            headers={"If-Match": created[0].headers["ETag"]},
        )
    )
    race_statuses = Counter(r.status_code for r in racing)
    listed = pooled.client().get(
        "/v1/tasks", params={"limit": WAVES * CREATES}, headers=user.headers
    )
    reliability.record(
        2,
        TITLE,
        f"{WAVES} waves of {CREATES} concurrent creates → {dict(created_statuses)}; "
        f"{RACERS} racing If-Match PATCHes → {dict(race_statuses)}",
    )
    assert created_statuses == {201: WAVES * CREATES}
    assert len(ids) == WAVES * CREATES
    assert race_statuses == {200: 1, 412: RACERS - 1}
    assert {t["id"] for t in listed.json()["items"]} == ids


def test_migrations_run_through_the_direct_url(
    pooled: Stack, cluster: PrivateCluster, reliability: Reliability
) -> None:
    """Each service's deploy-job command, given the pods' pooled DATABASE_URL, migrates directly.

    The advisory lock that serialises migrations lives in a session, which a
    transaction-mode pooler does not keep.
    """
    assert pooled.pgbouncer is not None
    fresh = cluster.create_database()
    env = {
        "DATABASE_URL": pooled.pgbouncer.url(fresh).render_as_string(hide_password=False),
        "DATABASE_MIGRATION_URL": fresh.render_as_string(hide_password=False),
        "DATABASE_TRANSACTION_POOLER": "true",
        "PATH": "/usr/bin:/bin",
    }
    outputs = []
    for service in ("auth", "tasks"):
        result = subprocess.run(
            [sys.executable, "-c", f"from taskstack.{service}.migrate import main; main()"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout.strip())
    versions = cluster.query(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'alembic_version'",
        database=fresh,
    )
    assert sorted(schema for (schema,) in versions) == ["auth", "tasks"]
    assert outputs == [
        "taskstack-auth-migrate: schema 'auth' is at head",
        "taskstack-tasks-migrate: schema 'tasks' is at head",
    ]


def test_no_prepared_statement_errors_anywhere(
    pooled: Stack, cluster: PrivateCluster, reliability: Reliability
) -> None:
    """Runs last in the module: the logs of everything the other tests did."""
    assert pooled.pgbouncer is not None
    logs = {
        "auth": "\n".join(replica.log() for replica in pooled.auth),
        "tasks": "\n".join(replica.log() for replica in pooled.tasks),
        "pgbouncer": pooled.pgbouncer.log(),
        "postgres": cluster.log_path.read_text(errors="replace"),
    }
    mentions = {name: log.lower().count("prepared statement") for name, log in logs.items()}
    server_errors = [
        record
        for service in ("auth", "tasks")
        for record in pooled.logs(service)
        if isinstance(record.get("status"), int) and record["status"] >= 500
    ]
    reliability.record(
        2,
        TITLE,
        f"{sum(mentions.values())} prepared-statement errors, {len(server_errors)} 5xx "
        "in the logs of 2 auth + 2 tasks replicas, PgBouncer and PostgreSQL",
    )
    assert mentions == dict.fromkeys(logs, 0)
    assert server_errors == []
