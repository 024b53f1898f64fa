"""auth's JWKS as tasks fetches it: a 503 or 429 with Retry-After holds the next fetch back.

The key set runs on an injected clock, sleep and jitter: the waits are read,
never timed.
"""

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from taskstack.common.jwks import (
    MAX_RETRY_WAIT,
    RemoteKeySet,
    retry_after_seconds,
    retry_wait,
)
from tests.support.tokens import TokenMint

JWKS_URL = "http://auth.internal/.well-known/jwks.json"


class FakeTime:
    """A monotonic clock that only ``sleep`` moves; every sleep is recorded, and the
    ``limit``-th ends the sleeper (the background loop) as a cancellation would."""

    def __init__(self, limit: int = 100) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.limit = limit

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) >= self.limit:
            raise asyncio.CancelledError


class Auth:
    """A JWKS endpoint that answers with the statuses it is given, in turn, then 200."""

    def __init__(self, mint: TokenMint, answers: list[httpx.Response]) -> None:
        self.mint = mint
        self.answers = answers
        self.fetched_at: list[float] = []

    def client(self, clock: Callable[[], float]) -> httpx.AsyncClient:
        def handler(request: httpx.Request) -> httpx.Response:
            self.fetched_at.append(clock())
            if self.answers:
                return self.answers.pop(0)
            return httpx.Response(200, json=self.mint.jwks())

        return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def shed(status: int = 503, retry_after: str | None = "10") -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, headers=headers, json={"status": status})


def run_loop(keys: RemoteKeySet) -> None:
    """Run the background loop until the fake sleep ends it."""

    async def loop() -> None:
        with pytest.raises(asyncio.CancelledError):
            await keys.run()

    asyncio.run(loop())


@pytest.mark.parametrize(
    ("status", "u"), [(503, 1.0), (503, 2.0), (429, 1.5)], ids=["low", "high", "429"]
)
def test_the_background_loop_waits_retry_after_times_the_jitter(status: int, u: float) -> None:
    fake, mint = FakeTime(limit=2), TokenMint()
    auth = Auth(mint, [shed(status, "10")])

    async def start() -> RemoteKeySet:
        keys = RemoteKeySet(
            JWKS_URL,
            client=auth.client(fake.clock),
            ttl=300,
            clock=fake.clock,
            sleep=fake.sleep,
            # U(1, 2) draws u; the TTL's own jitter draws its upper bound.
            jitter=lambda low, high: u if (low, high) == (1.0, 2.0) else high,
        )
        assert not await keys.refresh()
        return keys

    keys = asyncio.run(start())
    assert keys.held_for == pytest.approx(10 * u)
    run_loop(keys)

    # Held back for exactly Retry-After x U, not the 1 s backoff; then fetched and
    # asleep for the TTL.
    assert fake.sleeps[0] == pytest.approx(10 * u)
    assert auth.fetched_at[1] - auth.fetched_at[0] == pytest.approx(10 * u)
    assert keys.loaded
    assert fake.sleeps[1] == pytest.approx(300)


def test_the_wait_is_jittered_between_one_and_two_retry_afters() -> None:
    rng = random.Random(20)  # noqa: S311 - a reproducible jitter source
    waits = [retry_wait(4, jitter=rng.uniform) for _ in range(200)]
    assert all(4 <= wait <= 8 for wait in waits)
    # Spread over the range, not one value: clients shed together return apart.
    assert min(waits) < 4.5 and max(waits) > 7.5
    assert len({round(wait, 3) for wait in waits}) > 150


def test_the_wait_is_capped_and_a_zero_retry_after_still_waits() -> None:
    highest = lambda low, high: high  # noqa: E731
    assert retry_wait(3600, jitter=highest) == MAX_RETRY_WAIT
    assert retry_wait(0, jitter=lambda low, high: low) == 1.0


def test_no_fetch_goes_out_while_held_even_for_an_unknown_kid() -> None:
    fake, mint = FakeTime(), TokenMint()
    auth = Auth(mint, [shed(503, "5")])

    async def scenario() -> list[bool]:
        keys = RemoteKeySet(
            JWKS_URL,
            client=auth.client(fake.clock),
            cooldown=0,
            clock=fake.clock,
            jitter=lambda low, high: low,
        )
        results = [await keys.refresh()]
        for _ in range(20):  # a flood of unknown kids during the hold
            assert await keys.key("made-up") is None
        fake.now += 4.9
        results.append(await keys.refresh())
        fake.now += 0.2
        results.append(await keys.refresh())
        return results

    assert asyncio.run(scenario()) == [False, False, True]
    assert len(auth.fetched_at) == 2
    assert auth.fetched_at[1] - auth.fetched_at[0] == pytest.approx(5.1)


@pytest.mark.parametrize(
    "answer",
    [shed(503, None), shed(503, "soon"), shed(500, "10"), shed(404, "10")],
    ids=["no-retry-after", "unreadable", "500", "404"],
)
def test_other_failures_keep_the_usual_backoff(answer: httpx.Response) -> None:
    fake, mint = FakeTime(limit=3), TokenMint()
    auth = Auth(mint, [answer, shed(500, None), shed(500, None)])

    async def start() -> RemoteKeySet:
        keys = RemoteKeySet(
            JWKS_URL, client=auth.client(fake.clock), ttl=300, clock=fake.clock, sleep=fake.sleep
        )
        assert not await keys.refresh()
        return keys

    keys = asyncio.run(start())
    assert keys.held_for == 0
    run_loop(keys)
    assert fake.sleeps[:2] == [1.0, 2.0]  # the doubling backoff, then fetched
    assert len(auth.fetched_at) == 4 and keys.loaded


def test_retry_after_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    in_90s = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 7 ") == 7.0
    assert retry_after_seconds(in_90s, now=now.timestamp()) == 90.0
    assert retry_after_seconds("Thu, 26 Nov 2026 12:00:30 GMT", now=now.timestamp()) == 30.0
    # A date already past asks for no wait.
    assert retry_after_seconds("Thu, 26 Nov 2026 11:00:00 GMT", now=now.timestamp()) == 0.0
    for unreadable in (None, "", "-5", "1.5", "soon", "²", "Thu, 99 Nov 2026 25:00:00 GMT"):
        assert retry_after_seconds(unreadable, now=now.timestamp()) is None, unreadable
