"""The overload scenario's client: thousands of closed-loop HTTP/1.1 connections in one process.

wrk neither honours Retry-After nor records each request, so the overload
scenario has a client of its own, kept cheap per request: asyncio protocols
(on uvloop when it is installed), request bytes built beforehand, a minimal
response parser (status line, Content-Length or chunked, Retry-After,
Connection), the garbage collector off during the run. It runs as a process
of its own pinned to the load CPU, as wrk does:
``python -m taskstack.bench.overload plan.json samples.json``.

Each connection sends request after request (a closed loop); after a 503 with
Retry-After it waits Retry-After times U(1, 2), as taskstack's clients do,
and it opens a new connection whenever the server closed the old one. A probe
opens a new connection every ``probe_every`` seconds for GET ``probe_path``,
as a kubelet does. Every request is recorded: the time it was sent (seconds
since the run started), its latency, its status (an error is negative, see
``ERRORS``) and its Retry-After.
"""

import asyncio
import contextlib
import gc
import json
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from taskstack.common.jwks import retry_wait

# Statuses the client records for a request that got no whole HTTP answer.
CONNECT_FAILED = -1
CLOSED = -2  # the server closed the connection (or reset it) before a whole answer
TIMED_OUT = -3
MALFORMED = -4
STALE = -5  # a reused connection closed before any answer: sent again, never recorded
ERRORS = {CONNECT_FAILED: "connect", CLOSED: "closed", TIMED_OUT: "timeout", MALFORMED: "malformed"}
NO_RETRY_AFTER = -1.0
CONNECT_BACKOFF = 0.5  # seconds, times U(1, 2), after a request that got no answer
MAX_HEAD = 64 * 1024


@dataclass
class Phase:
    name: str
    connections: int
    seconds: float
    spread: float  # the connections open evenly over this many seconds from the start


@dataclass
class Plan:
    host: str
    port: int
    requests: list[str]  # whole HTTP/1.1 requests, latin-1 text, sent in rotation
    phases: list[Phase]
    probe_path: str = "/livez"
    probe_every: float = 0.05
    probe_timeout: float = 1.0
    timeout: float = 10.0  # per request, as wrk's --timeout

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> "Plan":
        raw = json.loads(path.read_text())
        return cls(**{**raw, "phases": [Phase(**phase) for phase in raw["phases"]]})


@dataclass
class Recorded:
    """Column by column: one entry per request (the probes have their own)."""

    phase: list[int] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    retry_after: list[float] = field(default_factory=list)

    def add(self, phase: int, sent: float, latency: float, status: int, retry_after: float) -> None:
        self.phase.append(phase)
        self.sent.append(sent)
        self.latency.append(latency)
        self.status.append(status)
        self.retry_after.append(retry_after)


class ConnectionGone(Exception):
    def __init__(self, answered: bool) -> None:
        super().__init__("connection closed")
        self.answered = answered  # some bytes of the answer had come


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its answer parsed just enough."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.answers = 0  # whole answers read on this connection
        self._waiter: asyncio.Future[tuple[int, float, bool]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._complete()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._complete()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionGone(bool(self.buffer)))

    def send(self, request: bytes) -> "asyncio.Future[tuple[int, float, bool]]":
        """The answer's (status, Retry-After or NO_RETRY_AFTER, the server closes)."""
        waiter: asyncio.Future[tuple[int, float, bool]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        # A server past its connection bound may answer before it is asked.
        self._complete()
        if not waiter.done():
            if self.closed or self.transport is None:
                waiter.set_exception(ConnectionGone(bool(self.buffer)))
            else:
                self.transport.write(request)
        return waiter

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def _complete(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = parse(self.buffer)
        except ValueError:
            waiter.set_result((MALFORMED, NO_RETRY_AFTER, True))
            return
        if answer is None:
            return
        status, retry_after, close, length = answer
        del self.buffer[:length]
        self.answers += 1
        waiter.set_result((status, retry_after, close))


def parse(buffer: bytes | bytearray) -> tuple[int, float, bool, int] | None:
    """(status, Retry-After, Connection: close, bytes used) of the first whole answer in
    ``buffer``; None while incomplete; ValueError when it is no HTTP/1.1 answer."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ValueError("head too long")
        return None
    lines = bytes(buffer[:end]).split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.") or len(lines[0]) < 12:
        raise ValueError("no status line")
    status = int(lines[0][9:12])
    length, chunked, close, retry_after = 0, False, False, NO_RETRY_AFTER
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
        elif name == b"retry-after" and value.strip().isdigit():
            retry_after = float(value.strip())
    body = end + 4
    if not chunked:
        return (status, retry_after, close, body + length) if len(buffer) >= body + length else None
    while True:  # chunk after chunk, to the last (empty) one and its trailers
        size_end = buffer.find(b"\r\n", body)
        if size_end < 0:
            return None
        size = int(bytes(buffer[body:size_end]).split(b";")[0], 16)
        if size == 0:
            if buffer[size_end : size_end + 4] == b"\r\n\r\n":
                return status, retry_after, close, size_end + 4
            trailers = buffer.find(b"\r\n\r\n", size_end + 2)
            return None if trailers < 0 else (status, retry_after, close, trailers + 4)
        body = size_end + 2 + size + 2
        if len(buffer) < body:
            return None


class Client:
    def __init__(self, plan: Plan, *, seed: int = 1) -> None:
        self.plan = plan
        self.requests = [r.encode("latin-1") for r in plan.requests]
        self.recorded = Recorded()
        self.probes = Recorded()
        self.random = random.Random(seed)  # noqa: S311 - jitter and spread, not secrets
        self.loop = asyncio.get_running_loop()
        # Not loop.time(): uvloop's counts whole milliseconds, once per turn of the loop.
        self.origin = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.origin

    async def open(self) -> Connection:
        _, connection = await asyncio.wait_for(
            self.loop.create_connection(Connection, self.plan.host, self.plan.port),
            self.plan.timeout,
        )
        return connection

    async def run(self) -> None:
        start = 0.0
        probing = asyncio.create_task(self.probe(sum(p.seconds for p in self.plan.phases)))
        for index, phase in enumerate(self.plan.phases):
            end = start + phase.seconds
            connections: list[Connection | None] = [None] * phase.connections
            loops = [
                asyncio.create_task(self.connection(index, n, start, end, connections))
                for n in range(phase.connections)
            ]
            await asyncio.sleep(max(0.0, end - self.now()))
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            for connection in connections:  # what was in flight is dropped, as wrk does
                if connection is not None:
                    connection.abort()
            start = end
        await probing

    async def connection(
        self, phase: int, n: int, start: float, end: float, slots: list[Connection | None]
    ) -> None:
        """One closed-loop connection of ``phase``, from its arrival until the phase ends."""
        spread = self.plan.phases[phase].spread
        await asyncio.sleep(max(0.0, start + spread * n / len(slots) - self.now()))
        rotation = self.random.randrange(len(self.requests))
        while self.now() < end:
            connection = slots[n]
            if connection is None or (connection.closed and not connection.buffer):
                sent = self.now()
                try:
                    connection = slots[n] = await self.open()
                except (OSError, TimeoutError):
                    self.recorded.add(
                        phase, sent, self.now() - sent, CONNECT_FAILED, NO_RETRY_AFTER
                    )
                    await asyncio.sleep(CONNECT_BACKOFF * self.random.uniform(1.0, 2.0))
                    continue
            request = self.requests[rotation % len(self.requests)]
            rotation += 1
            sent = self.now()
            status, retry_after, close = await self.exchange(connection, request)
            if status < 0 or close:
                connection.abort()
                slots[n] = None
            if status == STALE:
                # A kept-alive connection the server closed just as it was reused: a
                # client sends again on a new one (RFC 9110 §9.2.2), and so does this one.
                continue
            self.recorded.add(phase, sent, self.now() - sent, status, retry_after)
            if status < 0:  # no answer: back off as after a failed connect
                await asyncio.sleep(CONNECT_BACKOFF * self.random.uniform(1.0, 2.0))
            elif status == 503 and retry_after >= 0:
                await asyncio.sleep(retry_wait(retry_after, jitter=self.random.uniform))

    async def exchange(self, connection: Connection, request: bytes) -> tuple[int, float, bool]:
        try:
            return await asyncio.wait_for(connection.send(request), self.plan.timeout)
        except TimeoutError:
            return TIMED_OUT, NO_RETRY_AFTER, True
        except ConnectionGone as gone:
            stale = connection.answers > 0 and not gone.answered
            return STALE if stale else CLOSED, NO_RETRY_AFTER, True

    async def probe(self, seconds: float) -> None:
        """GET the probe path on a new connection every ``probe_every`` seconds."""
        request = (
            f"GET {self.plan.probe_path} HTTP/1.1\r\nHost: {self.plan.host}:{self.plan.port}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        running: set[asyncio.Task[None]] = set()
        ticks = int(seconds / self.plan.probe_every)
        for tick in range(ticks):
            await asyncio.sleep(max(0.0, tick * self.plan.probe_every - self.now()))
            task = asyncio.create_task(self.probe_once(request))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running, return_exceptions=True)

    async def probe_once(self, request: bytes) -> None:
        sent = self.now()
        phase = self.phase_at(sent)
        status, retry_after = CONNECT_FAILED, NO_RETRY_AFTER
        connection = None
        try:
            async with asyncio.timeout(self.plan.probe_timeout):
                connection = await self.open()
                status, retry_after, _ = await connection.send(request)
        except TimeoutError:
            status = TIMED_OUT if connection is not None else CONNECT_FAILED
        except ConnectionGone:
            status = CLOSED
        except OSError:
            status = CONNECT_FAILED
        finally:
            if connection is not None:
                connection.abort()
        self.probes.add(phase, sent, self.now() - sent, status, retry_after)

    def phase_at(self, moment: float) -> int:
        start = 0.0
        for index, phase in enumerate(self.plan.phases):
            start += phase.seconds
            if moment < start:
                return index
        return len(self.plan.phases) - 1


def raise_open_files_limit() -> int:
    """As many open files as the hard limit allows: a socket per connection."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def run(plan: Plan) -> dict[str, Any]:
    client = Client(plan)
    await client.run()
    return {
        "phases": [asdict(phase) for phase in plan.phases],
        "requests": asdict(client.recorded),
        "probes": asdict(client.probes),
    }


def main(arguments: list[str]) -> None:
    plan_path, output_path = map(Path, arguments)
    plan = Plan.load(plan_path)
    needed = max(phase.connections for phase in plan.phases) + 64
    if (limit := raise_open_files_limit()) < needed:
        raise SystemExit(f"open files limit {limit} is below the {needed} connections need")
    try:
        import uvloop  # optional, and only in this process

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    # No collection pauses in the middle of the measurement; the run is short.
    gc.disable()
    try:
        result = runner(run(plan))
    finally:
        gc.enable()
    output_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
