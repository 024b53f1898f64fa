"""The password policy and the hasher, without HTTP."""

import asyncio
import os
import threading
import time

import pytest

from taskstack.auth.errors import HashingOverloaded
from taskstack.auth.passwords import PasswordHasher, bcrypt_cost, password_problem


@pytest.mark.parametrize(
    ("password", "allowed"),
    [
        ("1234567", False),
        ("unusual8", True),
        ("x" * 1024, True),
        ("x" * 1025, False),
        ("qwerty123", False),
        ("SunShine", False),  # the list is compared case-insensitively
        ("nul\x00inside!", False),
        ("lone\ud800surrogate", False),
        ("ÄÖÜ äöü ß 1234", True),
    ],
)
def test_policy(password: str, allowed: bool) -> None:
    assert (password_problem(password) is None) is allowed


def test_the_list_holds_thousands_of_common_passwords() -> None:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    common = [p for p in FREQUENCY_LISTS["passwords"] if len(p) >= 8][:3000]
    assert len(common) == 3000
    assert all(password_problem(p) is not None for p in common)


def hasher(cost: int = 4, concurrency: int = 2, queue_limit: int = 8) -> PasswordHasher:
    return PasswordHasher(
        pepper="pepper", cost=cost, concurrency=concurrency, queue_limit=queue_limit
    )


def test_hash_and_verify_with_the_pepper() -> None:
    async def check() -> None:
        h = hasher()
        stored = await h.hash("correct horse")
        assert bcrypt_cost(stored) == 4
        assert await h.verify("correct horse", stored)
        assert not await h.verify("correct horsE", stored)
        other_pepper = PasswordHasher(pepper="other", cost=4, concurrency=1, queue_limit=1)
        assert not await other_pepper.verify("correct horse", stored)
        assert not await h.verify("correct horse", None)  # unknown account

    asyncio.run(check())


def test_nfkc_normalisation_matches_composed_and_decomposed_input() -> None:
    async def check() -> None:
        h = hasher()
        stored = await h.hash("caf\u00e9 au lait!")
        assert await h.verify("cafe\u0301 au lait!", stored)

    asyncio.run(check())


def test_rehash_is_needed_only_below_the_configured_cost() -> None:
    async def check() -> None:
        stored = await hasher(cost=4).hash("correct horse")
        assert hasher(cost=5).needs_rehash(stored)
        assert not hasher(cost=4).needs_rehash(stored)

    asyncio.run(check())


def test_a_full_queue_answers_503_at_once() -> None:
    async def burst() -> list[str]:
        h = hasher(cost=10, concurrency=1, queue_limit=1)
        results = await asyncio.gather(
            *(h.hash("correct horse") for _ in range(5)), return_exceptions=True
        )
        return [type(r).__name__ if isinstance(r, Exception) else "hash" for r in results]

    outcomes = asyncio.run(burst())
    assert outcomes.count("hash") == 2  # one hashing, one waiting
    assert outcomes.count(HashingOverloaded.__name__) == 3


def test_a_hash_that_waits_too_long_answers_503() -> None:
    async def burst() -> tuple[list[str], float]:
        h = PasswordHasher(
            pepper="pepper", cost=12, concurrency=1, queue_limit=8, queue_timeout=0.05
        )
        started = time.perf_counter()
        first = asyncio.ensure_future(h.hash("correct horse"))
        await asyncio.sleep(0.01)  # the first one holds the only thread
        waiting = await asyncio.gather(
            *(h.hash("correct horse") for _ in range(3)), return_exceptions=True
        )
        refused_after = time.perf_counter() - started
        await first
        h.close()
        return [type(r).__name__ for r in waiting], refused_after

    outcomes, refused_after = asyncio.run(burst())
    assert outcomes == [HashingOverloaded.__name__] * 3
    assert refused_after < 1.0  # the timeout, not the queue ahead (a cost-12 hash)


def test_hashing_threads_yield_to_the_event_loop() -> None:
    async def niceness() -> tuple[int, int]:
        h = hasher(concurrency=1)
        inside = await h._run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        h.close()
        return inside, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    inside, loop = asyncio.run(niceness())
    assert inside > loop


def test_an_admission_holds_one_place_for_a_whole_flow() -> None:
    async def flow() -> tuple[bool, bool, str, bool]:
        h = hasher(cost=4, concurrency=1, queue_limit=0)
        with h.admission():
            full_inside = h.full
            # Two hashes inside one admission: neither is refused for want of a place.
            await h.hash("correct horse")
            await h.hash("correct horse")
            try:
                with h.admission():
                    pass
            except HashingOverloaded:
                refused = "refused"
            else:
                refused = "admitted"
        full_after = h.full
        hashed_after = bool(await h.hash("correct horse"))
        h.close()
        return full_inside, full_after, refused, hashed_after

    full_inside, full_after, refused, hashed_after = asyncio.run(flow())
    assert full_inside
    assert refused == "admitted"  # the same task nests: its place is already held
    assert not full_after and hashed_after


def test_another_flow_is_refused_while_the_places_are_held() -> None:
    async def flows() -> list[str]:
        h = hasher(cost=4, concurrency=1, queue_limit=1)

        async def flow() -> str:
            with h.admission():
                await asyncio.sleep(0.05)  # a database read before the hash, say
                await h.hash("correct horse")
                return "signed in"

        results = await asyncio.gather(*(flow() for _ in range(4)), return_exceptions=True)
        h.close()
        return [r if isinstance(r, str) else type(r).__name__ for r in results]

    assert asyncio.run(flows()) == ["signed in"] * 2 + [HashingOverloaded.__name__] * 2


def test_flows_are_let_in_only_as_far_as_the_queue_timeout_reaches() -> None:
    async def flows() -> tuple[list[str], float]:
        # A generous place limit: the bound here is the pace of hashing.
        h = PasswordHasher(
            pepper="pepper", cost=10, concurrency=1, queue_limit=100, queue_timeout=0.5
        )
        await h.hash("correct horse")  # one measured hash sets the pace
        pace = h._hash_seconds
        assert pace is not None

        async def flow() -> str:
            with h.admission():
                await h.hash("correct horse")
                return "hashed"

        tasks = [asyncio.ensure_future(flow()) for _ in range(40)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        h.close()
        return [r if isinstance(r, str) else type(r).__name__ for r in results], pace

    outcomes, pace = asyncio.run(flows())
    let_in = outcomes.count("hashed")
    # All 40 ask at once, at about the first hash's pace: let in, those whose turn
    # comes within 0.5 s; refused at once, the rest.
    assert 1 <= let_in < 40  # 1 when the machine is so busy that one hash outlasts 0.5 s
    assert abs(let_in - (int(0.5 / pace) + 1)) <= 1  # the pace moves as hashes end
    assert outcomes.count(HashingOverloaded.__name__) == 40 - let_in
    assert outcomes[:let_in] == ["hashed"] * let_in  # first come, first let in
