"""Admission: at most the limit in progress, a short FIFO queue, then a cheap 503."""

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import URL
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskstack.common.admission import PLACE_KEY, Admission
from taskstack.common.errors import Problem
from taskstack.common.middleware import SECURITY_HEADERS
from tests.common.demo import demo_app
from tests.common.test_metrics import scrape
from tests.support.servers import serve

T = TypeVar("T")


class Gate:
    """An app whose requests wait until released: what is in it is what was admitted."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.inside = 0
        self.most_inside = 0
        self.open = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered.append(scope.get("path", scope["type"]))
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            if scope["type"] != "http":
                return
            if scope["path"].startswith("/v1/"):
                await self.open.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.inside -= 1


def admission(**options: Any) -> Admission:
    settings: dict[str, Any] = {"service": "test", "limit": 2, "queue_limit": 0}
    return Admission(**{"queue_timeout": 1.0, **settings, **options})


async def request(
    app: ASGIApp, path: str = "/v1/tasks", headers: list[tuple[bytes, bytes]] | None = None
) -> list[Message]:
    """One request through ``app``; the messages it sent. Its body is never there to read."""
    sent: list[Message] = []
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or []}

    async def receive() -> Message:
        raise AssertionError("the body was read")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def nothing_to_receive() -> Message:
    raise AssertionError("nothing to receive")


async def nothing_to_send(message: Message) -> None:
    raise AssertionError("nothing to send")


def status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(asyncio.wait_for(test(), 10))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_limit_is_honoured_exactly_and_the_rest_refused_at_once() -> None:
    async def scenario() -> None:
        gate = Gate()
        bound = admission(limit=3).wrap(gate)
        running = [asyncio.create_task(request(bound)) for _ in range(5)]
        await settle()
        refused = [task for task in running if task.done()]
        assert len(refused) == 2 and all(status(t.result()) == 503 for t in refused)
        assert gate.inside == 3
        gate.open.set()
        answers = await asyncio.gather(*running)
        assert sorted(status(a) for a in answers) == [200, 200, 200, 503, 503]
        assert gate.most_inside == 3
        assert isinstance(bound, Admission) and bound.in_progress == 0

    run(scenario)


def test_the_queue_admits_in_arrival_order_within_its_deadline() -> None:
    async def scenario() -> None:
        gate = Gate()
        bound = admission(limit=1, queue_limit=3, queue_timeout=5.0).wrap(gate)
        assert isinstance(bound, Admission)
        first = asyncio.create_task(request(bound, "/v1/first"))
        await settle()
        queued = []
        for name in ("a", "b", "c"):
            queued.append(asyncio.create_task(request(bound, f"/v1/{name}")))
            await settle()
        assert bound.queued == 3 and gate.entered == ["/v1/first"]
        # A fourth finds the queue full, and is refused without waiting.
        assert status(await request(bound)) == 503
        gate.open.set()
        answers = await asyncio.gather(first, *queued)
        assert [status(a) for a in answers] == [200] * 4
        assert gate.entered == ["/v1/first", "/v1/a", "/v1/b", "/v1/c"]
        assert gate.most_inside == 1 and bound.in_progress == 0 and bound.queued == 0

    run(scenario)


def test_a_request_waits_at_most_the_queue_deadline() -> None:
    async def scenario() -> None:
        gate = Gate()
        bound = admission(limit=1, queue_limit=5, queue_timeout=0.05).wrap(gate)
        assert isinstance(bound, Admission)
        holder = asyncio.create_task(request(bound))
        await settle()
        started = time.perf_counter()
        assert status(await request(bound)) == 503
        waited = time.perf_counter() - started
        assert 0.04 <= waited < 1.0
        assert bound.queued == 0  # a request that timed out leaves the line
        gate.open.set()
        await holder
        assert status(await request(bound)) == 200
        assert bound.in_progress == 0

    run(scenario)


def test_a_refusal_is_problem_json_with_retry_after_and_the_request_id() -> None:
    async def scenario() -> tuple[list[Message], list[Message]]:
        gate = Gate()
        bound = admission(limit=1).wrap(gate)
        holder = asyncio.create_task(request(bound))
        await settle()
        mine = await request(bound, headers=[(b"x-request-id", b"caller-id.1")])
        invented = await request(bound, headers=[(b"x-request-id", b"bad id\x7f")])
        gate.open.set()
        await holder
        return mine, invented

    mine, invented = run(scenario)
    start, body = mine
    assert start["status"] == 503
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    assert headers["content-type"] == "application/problem+json"
    assert headers["retry-after"] == "1"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name.lower()] == value
    assert headers["x-request-id"] == "caller-id.1"
    assert int(headers["content-length"]) == len(body["body"])
    problem = Problem.model_validate_json(body["body"])
    assert (problem.status, problem.title, problem.request_id) == (
        503,
        "Service Unavailable",
        "caller-id.1",
    )
    assert problem.detail and "Retry-After" in problem.detail
    # An unsafe incoming id is replaced, in the header and the body alike.
    headers = dict(invented[0]["headers"])
    assert headers[b"x-request-id"] != b"bad id\x7f"
    assert json.loads(invented[1]["body"])["request_id"] == headers[b"x-request-id"].decode()


def test_health_metrics_and_other_scopes_are_never_refused_nor_counted() -> None:
    async def scenario() -> None:
        gate = Gate()
        bound = admission(limit=1).wrap(gate)
        assert isinstance(bound, Admission)
        holder = asyncio.create_task(request(bound))
        await settle()
        assert status(await request(bound)) == 503
        for path in ("/livez", "/readyz", "/metrics"):
            assert status(await request(bound, path)) == 200
        await bound({"type": "lifespan"}, nothing_to_receive, nothing_to_send)
        assert gate.entered[-4:] == ["/livez", "/readyz", "/metrics", "lifespan"]
        assert bound.in_progress == 1
        gate.open.set()
        await holder

    run(scenario)


def test_the_place_is_given_back_when_the_app_raises_or_the_request_is_cancelled() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def scenario() -> None:
        bound = admission(limit=1, queue_limit=1).wrap(failing)
        assert isinstance(bound, Admission)
        for _ in range(3):
            with contextlib.suppress(RuntimeError):
                await request(bound)
            assert bound.in_progress == 0

        gate = Gate()
        bound = admission(limit=1, queue_limit=1, queue_timeout=5.0).wrap(gate)
        assert isinstance(bound, Admission)
        holder = asyncio.create_task(request(bound))
        await settle()
        waiter = asyncio.create_task(request(bound))
        await settle()
        assert bound.queued == 1
        waiter.cancel()  # a queued request whose connection went
        await settle()
        assert bound.queued == 0
        holder.cancel()  # a running one
        await settle()
        assert bound.in_progress == 0
        gate.open.set()
        assert status(await request(bound)) == 200

    run(scenario)


def test_the_place_is_given_back_when_the_client_goes_away() -> None:
    # The app returns once it sees the client gone, as Starlette's streaming does.
    async def until_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/v1/wait":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    bound = admission(limit=1, queue_limit=0).wrap(until_disconnect)
    assert isinstance(bound, Admission)
    with serve(bound) as base_url, httpx.Client(base_url=base_url) as client:
        port = int(base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET /v1/wait HTTP/1.1\r\nHost: test\r\n\r\n")
            deadline = time.monotonic() + 5
            while bound.in_progress == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert bound.in_progress == 1
            assert client.get("/v1/other").status_code == 503
        deadline = time.monotonic() + 5
        while bound.in_progress and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bound.in_progress == 0
        assert client.get("/v1/other").status_code == 200


def test_a_place_given_back_early_admits_another_and_is_not_given_back_twice() -> None:
    async def scenario() -> None:
        released = asyncio.Event()

        async def pausing(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["path"] == "/v1/pause":
                scope[PLACE_KEY].give_back()
                scope[PLACE_KEY].give_back()
                await released.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        bound = admission(limit=1).wrap(pausing)
        assert isinstance(bound, Admission)
        paused = [asyncio.create_task(request(bound, "/v1/pause")) for _ in range(3)]
        await settle()
        assert bound.in_progress == 0
        assert status(await request(bound)) == 200
        released.set()
        assert [status(a) for a in await asyncio.gather(*paused)] == [200] * 3
        assert bound.in_progress == 0

    run(scenario)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_grows_under_sustained_refusal_and_comes_back_down() -> None:
    clock = Clock()

    async def scenario() -> list[int]:
        gate = Gate()
        bound = admission(limit=1, min_retry_after=1, clock=clock).wrap(gate)
        assert isinstance(bound, Admission)

        async def admit(count: int) -> None:
            gate.open.set()
            for _ in range(count):
                assert status(await request(bound)) == 200

        async def refuse(count: int) -> str:
            gate.open.clear()
            holder = asyncio.create_task(request(bound))
            await settle()
            answers = [await request(bound) for _ in range(count)]
            assert {status(a) for a in answers} == {503}
            gate.open.set()
            await holder
            retry_after: bytes = dict(answers[-1][0]["headers"])[b"retry-after"]
            return retry_after.decode()

        # The first refusal chooses from 8 admitted for 1 refused: returns would be
        # an eighth of what is admitted at the minimum, which stays.
        seen = []
        await admit(8)
        seen.append(int(await refuse(65)))
        # A second later, 66 refused for 8 admitted: it grows, by x4 at most a second.
        clock.now += 1
        seen.append(int(await refuse(1)))
        clock.now += 1
        seen.append(int(await refuse(1)))
        # Nothing admitted in the window: x4 again, capped at 30.
        clock.now += 1
        seen.append(int(await refuse(1)))
        # Refusals are few against what is admitted: it halves each second.
        clock.now += 10
        await admit(800)
        seen.append(int(await refuse(1)))
        clock.now += 1
        seen.append(int(await refuse(1)))
        assert seen[-1] == bound.retry_after
        return seen

    assert run(scenario) == [1, 4, 16, 30, 15, 8]


def test_admission_in_a_service_counts_admitted_and_refused_and_keeps_health_open(
    clean_demo_database: URL,
) -> None:
    app, _ = demo_app(clean_demo_database, admission_limit=1, admission_queue_limit=0)
    bound: Admission = app.state.admission
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        before = scrape(client)
        holder = threading.Thread(target=lambda: client.get("/v1/demo/sleep?seconds=1"))
        holder.start()
        deadline = time.monotonic() + 5
        while bound.in_progress == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = client.get("/v1/demo/items/1", headers={"X-Request-ID": "refused-1"})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-request-id"] == refused.json()["request_id"] == "refused-1"
        for path in ("/livez", "/metrics"):
            assert client.get(path).status_code == 200
        holder.join(10)
        assert client.get("/v1/demo/items/1").status_code == 200
        after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        key = tuple(sorted({"service": "demo", **labels}.items()))
        return after[name].get(key, 0.0) - before.get(name, {}).get(key, 0.0)

    assert delta("taskstack_admission_admitted_total") == 2
    assert delta("taskstack_admission_refused_total", reason="queue_full") == 1
    assert after["taskstack_admission_limit"][(("service", "demo"),)] == 1
    assert after["taskstack_admission_retry_after_seconds"][(("service", "demo"),)] == 1
    assert "taskstack_admission_queue_wait_seconds_count" in after
