"""Item 3: PostgreSQL stops for ten seconds under a steady stream of reads and writes.

During the outage every answer is a fast 503 problem+json with Retry-After,
/readyz says no and /livez yes; afterwards the same processes serve again
within seconds, and every acknowledged write is in the database exactly once.
"""

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack, User, new_user, run_stack
from tests.e2e.report import Reliability
from tests.e2e.traffic import Outcome, Traffic, create_tasks, keyed_create, ms, timed

pytestmark = pytest.mark.e2e

POOL_TIMEOUT = 2.0
RATE = 20.0  # requests per second
OUTAGE_AT = 3.0  # seconds into the traffic
OUTAGE_SECONDS = 10.0
AFTER_RESTART = 4.0  # traffic keeps going this long after PostgreSQL is back
RECOVERY_BOUND = 5.0
# A 503 must come within the pool timeout (the retry budget); the margin covers
# the gateway hop and a busy two-core machine.
LATENCY_BOUND = POOL_TIMEOUT + 1.0


@pytest.fixture(scope="module")
def outage_stack(cluster: PrivateCluster) -> Iterator[Stack]:
    settings = {
        "DATABASE_POOL_TIMEOUT": str(POOL_TIMEOUT),
        "DATABASE_CONNECT_TIMEOUT": "2",
        "READINESS_TIMEOUT": "1",
    }
    with run_stack(cluster, env=settings, tracing=False) as stack:
        yield stack


@dataclass
class Timeline:
    """Seconds since the traffic started."""

    stop_called: float = 0.0
    down: float = 0.0  # pg_ctl stop returned: nothing answers on the port
    start_called: float = 0.0
    up: float = 0.0  # pg_ctl start returned: the server accepts connections
    ready_again: float = 0.0  # the tasks replica's /readyz answered 200 again
    readyz: list[tuple[float, int]] = field(default_factory=list)
    livez: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class Writes:
    """The POSTs of the traffic: request number → (title, outcome)."""

    sent: dict[int, tuple[str, Outcome]] = field(default_factory=dict)

    def acknowledged(self) -> set[str]:
        return {title for title, outcome in self.sent.values() if outcome.status == 201}


def _traffic(user: User, task_ids: list[str], writes: Writes, run: str) -> Traffic:
    async def send(client: httpx.AsyncClient, n: int, origin: float) -> Outcome:
        headers = user.headers
        if n % 2:
            title = f"{run}-{n}"
            outcome = await keyed_create(client, origin, headers, title)
            writes.sent[n] = (title, outcome)
            return outcome
        if n % 8 == 0:
            return await timed(client, "me", origin, client.get("/v1/auth/me", headers=headers))
        if n % 4 == 2:
            return await timed(client, "list", origin, client.get("/v1/tasks", headers=headers))
        task_id = task_ids[n % len(task_ids)]
        return await timed(
            client, "get", origin, client.get(f"/v1/tasks/{task_id}", headers=headers)
        )

    return Traffic(rate=RATE, duration=OUTAGE_AT + OUTAGE_SECONDS + AFTER_RESTART, send=send)


async def _probe(stack: Stack, timeline: Timeline, origin: float, until: asyncio.Event) -> None:
    """/readyz and /livez of the tasks replica itself (the gateway does not route them)."""
    async with httpx.AsyncClient(base_url=stack.tasks[0].base_url, timeout=5) as client:
        while not until.is_set():
            ready, live = await asyncio.gather(client.get("/readyz"), client.get("/livez"))
            now = time.monotonic() - origin
            timeline.readyz.append((now, ready.status_code))
            timeline.livez.append((now, live.status_code))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), 0.5)


async def _scenario(
    stack: Stack, cluster: PrivateCluster, traffic: Traffic, timeline: Timeline
) -> list[Outcome]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10, limits=limits) as client:
        origin = time.monotonic()
        load = asyncio.create_task(traffic.run(client, origin))
        await asyncio.sleep(OUTAGE_AT)
        timeline.stop_called = time.monotonic() - origin
        await asyncio.to_thread(cluster.stop, "fast")
        timeline.down = time.monotonic() - origin
        restarting = asyncio.Event()
        probe = asyncio.create_task(_probe(stack, timeline, origin, restarting))
        await asyncio.sleep(OUTAGE_SECONDS - (timeline.down - timeline.stop_called))
        restarting.set()
        await probe
        timeline.start_called = time.monotonic() - origin
        await asyncio.to_thread(cluster.start)
        timeline.up = time.monotonic() - origin
        async with httpx.AsyncClient(base_url=stack.tasks[0].base_url, timeout=5) as direct:
            async with asyncio.timeout(RECOVERY_BOUND * 2):
                while True:
                    if (await direct.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
        timeline.ready_again = time.monotonic() - origin
        return await load


def _recovery(outcomes: list[Outcome], up: float) -> float:
    """Seconds from PostgreSQL accepting connections to the start of the first request
    from which on every request succeeded."""
    last_failure = max((o.started for o in outcomes if not o.ok), default=0.0)
    first_good = min((o.started for o in outcomes if o.started > last_failure), default=up)
    return max(0.0, first_good - up)


def test_database_outage_is_fast_503s_then_recovery_without_restart(
    outage_stack: Stack, reliability: Reliability
) -> None:
    # The suite's own cluster (never the machine's server): every other stack
    # of the run reconnects to it after the restart, as the services must.
    stack = outage_stack
    client = stack.client()
    user = new_user(client, "outage")
    task_ids = create_tasks(client, user, [f"seed-{n}" for n in range(5)])
    pids = [replica.process.pid for replica in stack.processes()]
    writes, timeline = Writes(), Timeline()
    run = f"outage-{time.monotonic_ns()}"

    outcomes = asyncio.run(
        _scenario(stack, stack.postgres, _traffic(user, task_ids, writes, run), timeline)
    )

    during = [o for o in outcomes if timeline.down <= o.started <= timeline.start_called]
    # One that started during the outage may succeed: its retry can reach the
    # restarted server. One that also ended before the restart cannot.
    only_during = [o for o in during if o.ended <= timeline.start_called]
    failed = [o for o in outcomes if not o.ok]
    recovery = _recovery(outcomes, timeline.up)
    first_success = min(
        (o.ended for o in outcomes if o.ok and o.started >= timeline.down), default=float("inf")
    )
    slowest = max((o.elapsed for o in during), default=0.0)
    acknowledged = writes.acknowledged()

    # A fair client retries what it could not get acknowledged, with the same key.
    retried = {}
    for title, outcome in writes.sent.values():
        if outcome.status != 201:
            again = client.post(
                "/v1/tasks",
                json={"title": title},
                headers={**user.headers, "Idempotency-Key": title},
            )
            retried[title] = again
    landed_anyway = sum(1 for r in retried.values() if r.headers.get("idempotent-replayed"))
    rows = dict(
        stack.postgres.query(
            "SELECT title, count(*) FROM tasks.task WHERE title LIKE %s GROUP BY title",
            f"{run}-%",
            database=stack.database,
        )
    )
    duplicated = sorted(title for title, count in rows.items() if count != 1)
    missing = sorted(title for title in acknowledged if title not in rows)
    ready_during = {status for _, status in timeline.readyz}
    live_during = {status for _, status in timeline.livez}

    reliability.record(
        3,
        "Database outage (10 s)",
        f"{len(only_during)} requests during the outage, all 503 problem+json with Retry-After: "
        f"{all(o.is_retry_later_problem for o in only_during)}; slowest {ms(slowest)} "
        f"(pool timeout {POOL_TIMEOUT:g} s); /readyz {sorted(ready_during)}, "
        f"/livez {sorted(live_during)}; PostgreSQL up {timeline.up - timeline.start_called:.1f} s "
        f"after pg_ctl start, first success after {first_success - timeline.start_called:.1f} s, "
        f"every request succeeds from {recovery:.1f} s after it is up, /readyz 200 after "
        f"{timeline.ready_again - timeline.up:.1f} s, same processes; "
        f"{len(acknowledged)} writes acknowledged, {len(missing)} missing, "
        f"{len(duplicated)} duplicated; {len(retried)} retried with their key "
        f"({landed_anyway} had landed)",
    )

    # All but the last second's requests of the outage ended before the restart.
    assert len(only_during) >= RATE * (timeline.start_called - timeline.down - 1)
    assert [o for o in only_during if not o.is_retry_later_problem] == []
    assert [o for o in failed if not o.is_retry_later_problem] == []
    assert slowest < LATENCY_BOUND
    assert ready_during == {503} and live_during == {200}
    assert recovery < RECOVERY_BOUND
    assert timeline.ready_again - timeline.up < RECOVERY_BOUND
    assert [replica.process.pid for replica in stack.processes()] == pids
    assert all(replica.process.poll() is None for replica in stack.processes())
    assert {r.status_code for r in retried.values()} <= {201}
    assert missing == [] and duplicated == []
    assert set(rows) == {title for title, _ in writes.sent.values()}
