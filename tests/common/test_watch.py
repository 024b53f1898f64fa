"""StatementWatch: a statement the server never answers fails in bounded time; a slow one
goes on while the server answers; a cancellation from outside stays a cancellation."""

import asyncio
import time

import psycopg
import pytest

from taskstack.common.watch import SECOND_INTERRUPTION, SWEEPS_PER_WAIT, StatementWatch

SECONDS = 0.2
# Noticed up to one sweep late, then the server is asked for SECONDS.
BOUND = SECONDS * (1 + 1 / SWEEPS_PER_WAIT) + SECONDS + SECOND_INTERRUPTION


class Server:
    """What ``answers`` says, and how often it was asked."""

    def __init__(self, *, there: bool) -> None:
        self.there = there
        self.asked = 0

    async def answers(self, seconds: float) -> bool:
        self.asked += 1
        if not self.there:
            await asyncio.sleep(seconds)
        return self.there


def test_a_statement_never_answered_fails_within_the_bound() -> None:
    server = Server(there=False)

    async def main() -> float:
        watch = StatementWatch(SECONDS, server.answers)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="did not answer in time"):
            await watch.answered(asyncio.Event().wait())
        return time.monotonic() - started

    waited = asyncio.run(main())
    assert SECONDS <= waited < BOUND + 0.2
    assert server.asked == 1


def test_a_statement_that_ignores_the_first_interruption_gets_a_second() -> None:
    server = Server(there=False)
    interruptions = 0

    async def stubborn() -> None:
        # psycopg's wait: the first cancellation asks the server to cancel, and
        # goes on waiting for its answer.
        nonlocal interruptions
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                interruptions += 1
                if interruptions == 2:
                    raise

    async def main() -> None:
        watch = StatementWatch(SECONDS, server.answers)
        with pytest.raises(psycopg.OperationalError):
            await watch.answered(stubborn())

    asyncio.run(main())
    assert interruptions == 2


def test_a_slow_statement_goes_on_while_the_server_answers() -> None:
    server = Server(there=True)

    async def slow() -> str:
        await asyncio.sleep(SECONDS * 4)
        return "row"

    async def main() -> str:
        return await StatementWatch(SECONDS, server.answers).answered(slow())

    assert asyncio.run(main()) == "row"
    assert server.asked == 1  # asked once, when the statement outlived SECONDS


def test_statements_answered_in_time_never_ask_the_server() -> None:
    server = Server(there=False)

    async def main() -> list[int]:
        watch = StatementWatch(SECONDS, server.answers)

        async def quick(n: int) -> int:
            await asyncio.sleep(0.01)
            return n

        return list(await asyncio.gather(*(watch.answered(quick(n)) for n in range(50))))

    assert asyncio.run(main()) == list(range(50))
    assert server.asked == 0


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    server = Server(there=False)

    async def main() -> None:
        watch = StatementWatch(SECONDS, server.answers)
        task = asyncio.create_task(watch.answered(asyncio.Event().wait()))
        # Cancelled from outside while the watch is asking the server.
        await asyncio.sleep(SECONDS * 1.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
