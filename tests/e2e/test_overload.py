"""Item 12: far more concurrent clients than two tasks replicas admit, through nginx.

Each replica admits ``ADMISSION_LIMIT`` requests at once and lets a few more
wait for milliseconds; the rest are refused at once with 503 problem+json and
Retry-After. The clients honour it (``honouring_retry_after``): a request is
sent again after Retry-After times U(1, 2), a keyed POST with its
Idempotency-Key; a client whose wait would run past the load stops until the
load is over. Nothing else fails, every write lands exactly once, and each
replica's /livez answers 200 all along.

One Python client cannot send faster than two replicas serve on a two-core
machine, so the admitted requests are made slow instead: the test stalls the
task table with a lock, again and again, as a saturated CPU or database would.
"""

import asyncio
import functools
import re
import time
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack, User, new_user, run_stack
from tests.e2e.report import Reliability
from tests.e2e.traffic import (
    Outcome,
    create_tasks,
    honouring_retry_after,
    keyed_create,
    libpq,
    locked,
    ms,
    percentile,
    timed,
)

pytestmark = pytest.mark.e2e

ADMISSION = {
    "ADMISSION_LIMIT": "2",
    "ADMISSION_QUEUE_LIMIT": "2",
    "ADMISSION_QUEUE_TIMEOUT_SECONDS": "0.01",
    "ADMISSION_RETRY_AFTER_SECONDS": "1",
}
CLIENTS = 120
USERS = 4
ARRIVALS = 0.5  # seconds over which the clients start
LOAD_SECONDS = 4.0  # no client starts a request after this
GRACE = 6.0  # a request started in the load may retry this long after it
ATTEMPTS = 5
LIVEZ_EVERY = 0.05
STALL = 0.5  # seconds the task table is locked, each time
BETWEEN_STALLS = 0.5


@dataclass
class Load:
    """What the clients saw: every request's attempts, in order."""

    requests: list[list[Outcome]] = field(default_factory=list)
    writes: dict[str, list[Outcome]] = field(default_factory=dict)  # title → its attempts
    owners: dict[str, User] = field(default_factory=dict)  # title → who sent it
    stopped_early: int = 0  # clients that stopped because Retry-After ran past the load
    stalls: int = 0
    livez: dict[str, list[Outcome]] = field(default_factory=dict)  # replica → probes

    @property
    def answers(self) -> list[Outcome]:
        return [outcome for attempts in self.requests for outcome in attempts]


async def _list(client: httpx.AsyncClient, origin: float, headers: dict[str, str]) -> Outcome:
    return await timed(client, "list", origin, client.get("/v1/tasks", headers=headers))


async def _client(
    number: int,
    client: httpx.AsyncClient,
    users: list[User],
    origin: float,
    load: Load,
    run: str,
) -> None:
    """One client, closed loop: a list, then a keyed create, and so on, until the load ends."""
    await asyncio.sleep(ARRIVALS * number / CLIENTS)
    until = origin + LOAD_SECONDS
    sent = 0
    while time.monotonic() < until and sent < 1000:
        user = users[(number + sent) % len(users)]
        budget = until + GRACE - time.monotonic()
        if (number + sent) % 2:
            title = f"{run}-{number}-{sent}"
            attempts = await honouring_retry_after(
                functools.partial(keyed_create, client, origin, user.headers, title),
                attempts=ATTEMPTS,
                within=budget,
            )
            load.writes[title], load.owners[title] = attempts, user
        else:
            attempts = await honouring_retry_after(
                functools.partial(_list, client, origin, user.headers),
                attempts=ATTEMPTS,
                within=budget,
            )
        load.requests.append(attempts)
        sent += 1
        if attempts[-1].status == 503:
            load.stopped_early += 1
            return


async def _probe_livez(stack: Stack, load: Load, origin: float, done: asyncio.Event) -> None:
    """Each replica's own /livez (the gateway does not route it), as a kubelet would."""
    async with httpx.AsyncClient(timeout=5) as client:
        while not done.is_set():
            for replica in stack.tasks:
                probe = await timed(
                    client, "livez", origin, client.get(f"{replica.base_url}/livez")
                )
                load.livez.setdefault(replica.base_url, []).append(probe)
            await asyncio.sleep(LIVEZ_EVERY)


def _stall_the_tasks(database: str, start: float, until: float) -> int:
    """Lock the task table for STALL seconds, every STALL + BETWEEN_STALLS, from ``start``
    to ``until``: the admitted requests wait, and the ones behind them are refused."""
    time.sleep(max(0.0, start - time.monotonic()))
    stalls = 0
    while time.monotonic() < until:
        with locked(database, "LOCK TABLE tasks.task IN ACCESS EXCLUSIVE MODE"):
            time.sleep(STALL)
        stalls += 1
        time.sleep(BETWEEN_STALLS)
    return stalls


async def _overload(stack: Stack, users: list[User], run: str) -> Load:
    load = Load()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30, limits=limits) as client:
        origin = time.monotonic()
        done = asyncio.Event()
        probe = asyncio.create_task(_probe_livez(stack, load, origin, done))
        stalls = asyncio.create_task(
            asyncio.to_thread(
                _stall_the_tasks, libpq(stack.database), origin + ARRIVALS, origin + LOAD_SECONDS
            )
        )
        async with asyncio.timeout(LOAD_SECONDS + GRACE + 30):
            await asyncio.gather(
                *(_client(n, client, users, origin, load, run) for n in range(CLIENTS))
            )
            load.stalls = await stalls
        done.set()
        await probe
    return load


async def _after_the_load(stack: Stack, load: Load) -> dict[str, list[Outcome]]:
    """A client that gave up on a write sends it again once the load is over, with its key."""
    unacknowledged = [t for t, attempts in load.writes.items() if attempts[-1].status != 201]
    retried = {}
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as client:
        for title in unacknowledged:
            headers = load.owners[title].headers
            retried[title] = await honouring_retry_after(
                functools.partial(keyed_create, client, time.monotonic(), headers, title),
                attempts=ATTEMPTS,
                within=30,
            )
    return retried


def _gateway_refusal_times(access_log: str) -> list[float]:
    """How long nginx took over each 503 it passed on (its $request_time, in seconds):
    the refusal as the server side made it, without the test client's own delays."""
    return [float(match[1]) for match in re.finditer(r'" 503 ([0-9.]+) upstream=', access_log)]


def _refused_by(replica_url: str) -> float:
    """The replica's own count of the requests its admission refused, every reason."""
    text = httpx.get(f"{replica_url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "taskstack_admission_refused"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def test_overload_is_refused_fast_with_retry_after_and_no_write_is_lost(
    cluster: PrivateCluster, reliability: Reliability
) -> None:
    with run_stack(cluster, tasks_replicas=2, tasks_env=ADMISSION, tracing=False) as stack:
        client = stack.client()
        users = [new_user(client, "overload") for _ in range(USERS)]
        for user in users:
            create_tasks(client, user, [f"seed-{n}" for n in range(3)])
        run = f"overload-{time.monotonic_ns()}"

        load = asyncio.run(_overload(stack, users, run))

        retried = asyncio.run(_after_the_load(stack, load))
        at_the_gateway = _gateway_refusal_times(stack.nginx.access_log())
        refused_by_replicas = sum(_refused_by(replica.base_url) for replica in stack.tasks)
        rows = dict(
            stack.postgres.query(
                "SELECT title, count(*) FROM tasks.task WHERE title LIKE %s GROUP BY title",
                f"{run}-%",
                database=stack.database,
            )
        )

    answers = load.answers
    served = [o for o in answers if 200 <= o.status < 300]
    refused = [o for o in answers if o.status == 503]
    unexpected = [o for o in answers if not (200 <= o.status < 300 or o.is_retry_later_problem)]
    no_answer = [o for o in answers if o.status == 0]
    served_on_retry = sum(
        1 for attempts in load.requests if len(attempts) > 1 and attempts[-1].status < 300
    )
    retry_afters = sorted({int(o.retry_after or 0) for o in refused})
    duplicated = sorted(title for title, count in rows.items() if count != 1)
    missing = sorted(title for title in load.writes if title not in rows)
    livez = [probe for probes in load.livez.values() for probe in probes]
    slowest_refusal = max((o.elapsed for o in refused), default=0.0)

    reliability.record(
        12,
        "Overload",
        f"{CLIENTS} clients for {LOAD_SECONDS:g} s against 2 tasks replicas admitting "
        f"{ADMISSION['ADMISSION_LIMIT']} each, the task table stalled {load.stalls} x "
        f"{STALL:g} s: {len(answers)} answers, {len(served)} 2xx, "
        f"{len(refused)} 503 problem+json with Retry-After {retry_afters} s (p99 "
        f"{ms(percentile(at_the_gateway, 99))} at the gateway, "
        f"{ms(percentile([o.elapsed for o in refused], 99))} at the client, slowest "
        f"{ms(slowest_refusal)}; {refused_by_replicas:.0f} counted by the replicas), "
        f"{len(unexpected)} other, "
        f"{len(no_answer)} without an answer; {served_on_retry} served on a retry, "
        f"{load.stopped_early} clients waited past the load; {len(load.writes)} keyed writes, "
        f"{len(retried)} retried after the load, {len(missing)} missing, {len(duplicated)} "
        f"duplicated; /livez {sorted({p.status for p in livez})} x {len(livez)} (p99 "
        f"{ms(percentile([p.elapsed for p in livez], 99))})",
    )

    assert no_answer == []
    assert unexpected == []
    assert refused, "the admission limit never refused anything"
    assert served
    # Every 503 the clients saw is one the replicas' admission counted: nginx passed
    # them on as they were, and nothing else answered 503.
    assert refused_by_replicas == len(refused)
    assert {a[-1].status for a in retried.values()} <= {201}
    assert missing == [] and duplicated == []
    assert set(rows) == set(load.writes)
    assert len(load.livez) == 2
    assert livez and {p.status for p in livez} == {200}


def test_the_client_honours_retry_after_within_its_attempts_and_time() -> None:
    """``honouring_retry_after`` on its own: what it waits, and when it stops."""

    def answer(status: int, retry_after: str | None = None) -> Outcome:
        return Outcome("get", 0.0, 0.001, status, "application/problem+json", retry_after)

    def run(
        answers: list[Outcome], *, attempts: int = 5, within: float = 60.0
    ) -> tuple[list[int], list[float]]:
        waits: list[float] = []
        queue = list(answers)

        async def send() -> Outcome:
            return queue.pop(0)

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        async def go() -> list[Outcome]:
            return await honouring_retry_after(
                send, attempts=attempts, within=within, jitter=lambda low, high: 1.5, sleep=sleep
            )

        return [o.status for o in asyncio.run(go())], waits

    # Retried after Retry-After x 1.5 each time, until it is served.
    assert run([answer(503, "2"), answer(503, "4"), answer(201)]) == ([503, 503, 201], [3.0, 6.0])
    # Not retried: served, another error, a 503 without Retry-After or with an unreadable one.
    assert run([answer(200)]) == ([200], [])
    assert run([answer(500, "1"), answer(200)]) == ([500], [])
    assert run([answer(503), answer(200)]) == ([503], [])
    assert run([answer(503, "soon"), answer(200)]) == ([503], [])
    # Bounded: in attempts, and in time (a wait that would end past ``within``).
    assert run([answer(503, "1")] * 5, attempts=3) == ([503] * 3, [1.5, 1.5])
    assert run([answer(503, "10"), answer(200)], within=12) == ([503], [])
