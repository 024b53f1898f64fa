"""Item 5: more concurrent slow requests than the tasks pool holds.

A lock the test holds on tasks.task keeps every list query waiting inside
PostgreSQL, so the first POOL_SIZE requests hold all the connections; the
rest must get a fast 503, the held ones must finish once the lock goes, and
no connection may be left behind, neither while the stack runs nor after.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack, User, new_user, run_stack
from tests.e2e.report import Reliability
from tests.e2e.traffic import (
    Outcome,
    connections,
    create_tasks,
    libpq,
    locked,
    ms,
    timed,
    wait_for,
)

pytestmark = pytest.mark.e2e

POOL_SIZE = 2
POOL_TIMEOUT = 1.0
CONCURRENT = 10
HOLD_LOCK = 2.5  # seconds, well past the pool timeout
# Within the pool timeout, plus the gateway hop on a busy two-core machine.
FAST_503_BOUND = POOL_TIMEOUT + 1.5


async def _burst(stack: Stack, user: User, origin: float) -> list[Outcome]:
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30, limits=limits) as client:
        return list(
            await asyncio.gather(
                *(
                    timed(client, "list", origin, client.get("/v1/tasks", headers=user.headers))
                    for _ in range(CONCURRENT)
                )
            )
        )


def _while_locked(stack: Stack, user: User) -> tuple[list[Outcome], float]:
    """The burst's outcomes, and how long the lock was held."""
    admin = libpq(stack.postgres.url)
    with ThreadPoolExecutor(1) as pool:
        with locked(libpq(stack.database), "LOCK TABLE tasks.task IN ACCESS EXCLUSIVE MODE"):
            origin = time.monotonic()
            burst = pool.submit(asyncio.run, _burst(stack, user, origin))
            wait_for(
                lambda: connections(admin, stack.database, "tasks", waiting=True) == POOL_SIZE,
                within=FAST_503_BOUND,
                what=f"{POOL_SIZE} requests blocked on the lock",
            )
            time.sleep(max(0.0, HOLD_LOCK - (time.monotonic() - origin)))
            held = time.monotonic() - origin
        return burst.result(timeout=30), held


def test_requests_beyond_the_pool_get_fast_503s_and_no_connection_leaks(
    cluster: PrivateCluster, reliability: Reliability
) -> None:
    settings = {
        "DATABASE_POOL_SIZE": str(POOL_SIZE),
        "DATABASE_MAX_OVERFLOW": "0",
        "DATABASE_POOL_TIMEOUT": str(POOL_TIMEOUT),
    }
    admin = libpq(cluster.url)
    with run_stack(cluster, tasks_env=settings, tracing=False) as stack:
        database = stack.database
        client = stack.client()
        user = new_user(client, "pool")
        create_tasks(client, user, [f"task-{n}" for n in range(3)])

        outcomes, held = _while_locked(stack, user)

        served = [o for o in outcomes if o.status == 200]
        refused = [o for o in outcomes if o.status == 503]
        after = [client.get("/v1/tasks", headers=user.headers).status_code for _ in range(5)]
        # Readiness probes open a connection of their own; let any finish.
        time.sleep(0.5)
        while_running = connections(admin, database, "tasks")
    stopped_in = wait_for(
        lambda: connections(admin, database, "tasks") == 0,
        within=5,
        what="the stopped service's connections closed",
    )

    slowest_503 = max((o.elapsed for o in refused), default=0.0)
    reliability.record(
        5,
        "Pool exhaustion",
        f"{CONCURRENT} concurrent slow requests, pool {POOL_SIZE}: {len(refused)} answered 503 "
        f"(slowest {ms(slowest_503)}, pool timeout {POOL_TIMEOUT:g} s), {len(served)} served "
        f"after the lock ({held:.1f} s) went; {while_running} tasks connections afterwards, "
        f"0 within {stopped_in:.1f} s of stopping",
    )
    assert len(served) == POOL_SIZE
    assert len(refused) == CONCURRENT - POOL_SIZE
    assert all(o.is_retry_later_problem for o in refused)
    assert slowest_503 < FAST_503_BOUND
    assert all(o.started + o.elapsed >= held - 0.1 for o in served)  # done once the lock went
    assert after == [200] * 5
    assert while_running <= POOL_SIZE
