"""Item 4: SIGTERM to one of two tasks replicas behind nginx, under steady load.

The replica stops accepting, finishes what it accepted (including a request
kept in flight for seconds by a row lock the test holds) and exits; nginx
sends everything new to the other replica, so the client sees no 5xx for
its idempotent requests, and POSTs retried with their Idempotency-Key create
nothing twice.
"""

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack, User, json_lines, new_user, run_stack
from tests.e2e.report import Reliability
from tests.e2e.traffic import (
    Outcome,
    Traffic,
    connections,
    create_tasks,
    keyed_create,
    libpq,
    locked,
    ms,
    timed,
)

pytestmark = pytest.mark.e2e

RATE = 30.0
DURATION = 8.0
SIGTERM_AT = 2.0
RELEASE_AFTER = 3.0  # the slow request stays in flight this long after SIGTERM
# uvicorn acts on a signal at its next tick (0.1 s, longer on a busy machine);
# until then replica 0 still accepts, and serves, new requests.
SETTLE = 1.0
SLOW_TITLE = "finished after SIGTERM"


@dataclass
class Shutdown:
    """Seconds since the traffic started."""

    sigterm: float = 0.0
    released: float = 0.0
    exited: float = 0.0
    returncode: int | None = None
    slow: Outcome | None = None
    writes: dict[str, Outcome] = field(default_factory=dict)  # request id → outcome


def _traffic(user: User, task_ids: list[str], shutdown: Shutdown, run: str) -> Traffic:
    async def send(client: httpx.AsyncClient, n: int, origin: float) -> Outcome:
        request_id = f"{run}-{n}"
        headers = {**user.headers, "X-Request-ID": request_id}
        if n % 4 == 3:
            outcome = await keyed_create(client, origin, headers, request_id)
            shutdown.writes[request_id] = outcome
        elif n % 2:
            outcome = await timed(client, "list", origin, client.get("/v1/tasks", headers=headers))
        else:
            task_id = task_ids[n % len(task_ids)]
            outcome = await timed(
                client, "get", origin, client.get(f"/v1/tasks/{task_id}", headers=headers)
            )
        outcome.request_id = request_id
        return outcome

    return Traffic(rate=RATE, duration=DURATION, send=send)


async def _wait(condition: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if await asyncio.to_thread(condition):
                return
            await asyncio.sleep(0.05)


async def _scenario(
    stack: Stack[Any],
    user: User,
    slow_task: str,
    lock: psycopg.Connection,
    traffic: Traffic,
    shutdown: Shutdown,
) -> list[Outcome]:
    dying = stack.tasks[0]
    admin = libpq(stack.postgres.url)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with (
        httpx.AsyncClient(base_url=stack.gateway, timeout=30, limits=limits) as client,
        httpx.AsyncClient(base_url=dying.base_url, timeout=30) as direct,
    ):
        slow_origin = time.monotonic()
        # Straight to replica 0, so it is the one holding the request at SIGTERM.
        slow = asyncio.create_task(
            timed(
                direct,
                "slow",
                slow_origin,
                direct.patch(
                    f"/v1/tasks/{slow_task}", json={"title": SLOW_TITLE}, headers=user.headers
                ),
            )
        )
        await _wait(lambda: connections(admin, stack.database, "tasks", waiting=True) == 1, 5)
        origin = time.monotonic()
        load = asyncio.create_task(traffic.run(client, origin))
        await asyncio.sleep(SIGTERM_AT)
        dying.process.send_signal(signal.SIGTERM)
        shutdown.sigterm = time.monotonic() - origin
        await asyncio.sleep(RELEASE_AFTER)
        await asyncio.to_thread(lock.rollback)
        shutdown.released = time.monotonic() - origin
        shutdown.returncode = await asyncio.to_thread(
            dying.process.wait, stack.graceful_shutdown + 5
        )
        shutdown.exited = time.monotonic() - origin
        shutdown.slow = await slow
        shutdown.slow.started -= origin - slow_origin  # on the traffic's clock, as the rest
        return await load


Launch = Callable[[PrivateCluster], contextlib.AbstractContextManager[Stack[Any]]]


@pytest.fixture(params=["processes", pytest.param("images", marks=pytest.mark.images)])
def launch(request: pytest.FixtureRequest) -> Launch:
    """Two tasks replicas as processes, or as the chart's pods from the images."""
    if request.param == "images":
        from tests.e2e.pods import run_pods

        images = request.getfixturevalue("service_images")
        return lambda cluster: run_pods(cluster, images, tasks_replicas=2)

    @contextlib.contextmanager
    def processes(cluster: PrivateCluster) -> Iterator[Stack[Any]]:
        with run_stack(cluster, tasks_replicas=2, tracing=False) as stack:
            yield stack

    return processes


def test_sigterm_drains_one_replica_while_nginx_moves_traffic_to_the_other(
    cluster: PrivateCluster, reliability: Reliability, launch: Launch
) -> None:
    with launch(cluster) as stack:
        client = stack.client()
        user = new_user(client, "shutdown")
        slow_task, *task_ids = create_tasks(client, user, [f"task-{n}" for n in range(6)])
        run = f"shutdown-{time.monotonic_ns()}"
        lock_on_slow_task = "SELECT id FROM tasks.task WHERE id = %s FOR UPDATE"
        shutdown = Shutdown()
        traffic = _traffic(user, task_ids, shutdown, run)
        with locked(libpq(stack.database), lock_on_slow_task, slow_task) as lock:
            outcomes = asyncio.run(_scenario(stack, user, slow_task, lock, traffic, shutdown))
        dying_log, surviving_log = (replica.log() for replica in stack.tasks)
        access = stack.nginx.access_log()
        # A fair client retries a POST it got no answer for, with the same key.
        retried = {
            request_id: client.post(
                "/v1/tasks",
                json={"title": request_id},
                headers={**user.headers, "Idempotency-Key": request_id},
            ).status_code
            for request_id, outcome in shutdown.writes.items()
            if outcome.status != 201
        }
        rows = dict(
            stack.postgres.query(
                "SELECT title, count(*) FROM tasks.task WHERE title LIKE %s GROUP BY title",
                f"{run}-%",
                database=stack.database,
            )
        )
        slow_row = stack.postgres.query(
            "SELECT title FROM tasks.task WHERE id = %s", slow_task, database=stack.database
        )

    served_by = {
        record["request_id"]: replica
        for replica, log in enumerate((dying_log, surviving_log))
        for record in json_lines(log)
        if record.get("message") == "request" and str(record.get("request_id", "")).startswith(run)
    }
    idempotent = [o for o in outcomes if o.kind != "create"]
    idempotent_5xx = [o for o in idempotent if o.status >= 500 or o.status == 0]
    writes_5xx = [o for o in shutdown.writes.values() if o.status >= 500 or o.status == 0]
    after = [o for o in outcomes if o.started > shutdown.sigterm + SETTLE]
    after_on_dying = [o for o in after if served_by.get(o.request_id) == 0]
    after_elsewhere = [o for o in after if served_by.get(o.request_id) == 1]
    on_dying = [o for o in outcomes if served_by.get(o.request_id) == 0]
    passed_on = sum(1 for line in access.splitlines() if ", 127.0.0.1:" in line)
    slow = shutdown.slow
    assert slow is not None

    reliability.record(
        4,
        "Graceful shutdown",
        f"SIGTERM to 1 of 2 tasks replicas under {RATE:g} req/s: {len(idempotent_5xx)} 5xx of "
        f"{len(idempotent)} idempotent requests, {len(writes_5xx)} of {len(shutdown.writes)} "
        f"POSTs (retried with their key, 0 duplicates: {all(c == 1 for c in rows.values())}); "
        f"{len(after_elsewhere)} of {len(after)} requests after SIGTERM served by the other "
        f"replica ({len(on_dying)} served by the stopping one), {passed_on} passed on by nginx; "
        f"a request in flight at SIGTERM finished "
        f"{slow.status} after {ms(slow.elapsed)}; exit "
        f"{shutdown.exited - shutdown.sigterm:.1f} s after SIGTERM (status {shutdown.returncode})",
        label=stack.label,
    )
    assert idempotent_5xx == []
    assert slow.status == 200 and slow_row == [(SLOW_TITLE,)]
    assert slow.ended >= shutdown.released  # it really was in flight until the lock went
    assert on_dying and all(o.ok for o in on_dying)  # all replica 0 accepted completed
    assert after and after_on_dying == [] and len(after_elsewhere) == len(after)
    # uvicorn re-raises the signal once its graceful shutdown is done: "terminated by
    # SIGTERM" is its clean exit (status 0 as a container's PID 1, which the kernel
    # shields from it); a forced one would be SIGKILL or an error status.
    assert shutdown.returncode == stack.clean_exit
    assert shutdown.released <= shutdown.exited < shutdown.sigterm + stack.graceful_shutdown
    if stack.grace_period is not None:  # the pod's, which the kubelet would enforce
        assert shutdown.exited - shutdown.sigterm < stack.grace_period
    assert "Application shutdown complete" in dying_log
    assert "graceful shutdown exceeded" not in dying_log
    assert set(retried.values()) <= {201}
    assert set(rows) == set(shutdown.writes) and set(rows.values()) == {1}
