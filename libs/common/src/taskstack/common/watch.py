"""StatementWatch: a statement whose server stopped answering is given up on, in bounded time.

A server that stops answering without closing the connection (a hung server,
a half-open connection) must not hold a request, or a pool slot, forever;
a statement that is only slow (waiting for a row lock, say) must go on. So a
statement that has not been answered within ``seconds`` makes the watch ask
the server, on a connection of its own and for ``seconds`` more, whether it
answers at all; if it does not, the statement's task is interrupted as
psycopg expects: once (psycopg asks the server to cancel the statement), and
again shortly after (psycopg then closes the connection at once, and the
pool drops it).

Most requests run one watched statement (the first on a pooled connection
that was not checked), so watching must cost next to nothing: one timer
sweeps every watched statement a few times per ``seconds`` rather than one
timer per statement. A statement is noticed at most a quarter of ``seconds``
late.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

T = TypeVar("T")
Answers = Callable[[float], Awaitable[bool]]

SWEEPS_PER_WAIT = 4
SECOND_INTERRUPTION = 0.1


class _Watched:
    __slots__ = ("asking", "deadline", "interruptions", "task", "timer")

    def __init__(self, task: "asyncio.Task[object]", deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.interruptions = 0
        self.asking: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None


class StatementWatch:
    """The watched statements of one database: each given ``seconds`` to be answered,
    then ``answers(seconds)`` decides whether the server is there at all."""

    def __init__(self, seconds: float, answers: Answers) -> None:
        self.seconds = max(seconds, 0.0)
        self._answers = answers
        self._watched: dict[asyncio.Task[object], _Watched] = {}
        self._sweeping: asyncio.TimerHandle | None = None

    async def answered(self, call: Awaitable[T]) -> T:
        """``call``'s result, or OperationalError when the server does not answer."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        watched = _Watched(task, loop.time() + self.seconds)
        self._watched[task] = watched
        if self._sweeping is None:
            self._sweeping = loop.call_later(self.seconds / SWEEPS_PER_WAIT, self._sweep, loop)
        try:
            return await call
        except asyncio.CancelledError:
            if not watched.interruptions:
                raise
            for _ in range(watched.interruptions):
                task.uncancel()
            if task.cancelling():
                raise  # cancelled from outside as well: that cancellation wins
            raise psycopg.OperationalError("the database did not answer in time") from None
        finally:
            del self._watched[task]
            if watched.timer is not None:
                watched.timer.cancel()
            if watched.asking is not None:
                watched.asking.cancel()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweeping = None
        if not self._watched:
            return  # the next watched statement starts the sweeps again
        now = loop.time()
        for watched in self._watched.values():
            if watched.asking is None and now >= watched.deadline:
                watched.asking = loop.create_task(self._ask(watched, loop))
        self._sweeping = loop.call_later(self.seconds / SWEEPS_PER_WAIT, self._sweep, loop)

    async def _ask(self, watched: _Watched, loop: asyncio.AbstractEventLoop) -> None:
        if not await self._answers(self.seconds):
            self._interrupt(watched, loop)

    def _interrupt(self, watched: _Watched, loop: asyncio.AbstractEventLoop) -> None:
        watched.interruptions += 1
        watched.task.cancel()
        if watched.interruptions == 1:
            watched.timer = loop.call_later(SECOND_INTERRUPTION, self._interrupt, watched, loop)
