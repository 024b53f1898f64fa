"""Password policy and hashing.

Policy (NIST SP 800-63B, OWASP ASVS 5.0 §6.2): 8 to 1024 characters of any
script, no composition rules, no trimming or case-folding, not one of the
most common passwords, not the e-mail address. Passwords are NFKC-normalised
before hashing, so the same password typed on another keyboard still matches.

Hashing: bcrypt reads only 72 bytes, so the password is first reduced with
HMAC-SHA-384 keyed by a pepper and base64-encoded (64 bytes), as OWASP's
Password Storage Cheat Sheet describes: nothing is silently truncated, and a
stolen database alone cannot be attacked offline.
"""

import asyncio
import base64
import contextlib
import contextvars
import functools
import hashlib
import hmac
import os
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
import bcrypt
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from taskstack.auth.errors import HashingOverloaded

T = TypeVar("T")

MIN_LENGTH = 8
MAX_LENGTH = 1024


@functools.cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the 30,000 most common passwords of a public corpus.
    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str, *, email: str | None = None) -> str | None:
    """Why ``password`` may not be used, or None when it may."""
    if len(password) < MIN_LENGTH:
        return f"The password must be at least {MIN_LENGTH} characters long."
    if len(password) > MAX_LENGTH:
        return f"The password must be at most {MAX_LENGTH} characters long."
    if "\x00" in password:
        return "The password must not contain NUL characters."
    if not _encodable(password):
        return "The password is not valid Unicode text."
    if password.casefold() in _common_passwords():
        return "This password is one of the most commonly used passwords; choose another."
    if email and password.casefold() in {email.casefold(), email.split("@")[0].casefold()}:
        return "The password must not be the e-mail address."
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _prehash(password: str, pepper: bytes) -> bytes:
    normalized = unicodedata.normalize("NFKC", password).encode("utf-8")
    return base64.b64encode(hmac.new(pepper, normalized, hashlib.sha384).digest())


def bcrypt_cost(password_hash: str) -> int:
    return int(password_hash.split("$")[2])


class PasswordHasher:
    """bcrypt in a bounded thread pool, so hashing never stalls the event loop.

    At most ``concurrency`` hashes run at once (bcrypt holds a core each), at
    most ``queue_limit`` wait, none is let in whose turn would come after
    ``queue_timeout`` seconds at the pace hashes are finishing, and none waits
    longer than that: past any bound a sign-in gets a fast 503 with
    Retry-After instead of joining a queue that only grows while clients time
    out.
    """

    def __init__(
        self,
        *,
        pepper: str,
        cost: int,
        concurrency: int,
        queue_limit: int,
        queue_timeout: float = 5.0,
    ):
        self._pepper = pepper.encode("utf-8")
        self.cost = cost
        self._limiter = anyio.CapacityLimiter(concurrency)
        # Threads of their own, at a lower scheduling priority: a hash that
        # shares a core with the event loop then yields to it, so a sign-in
        # storm does not slow the JWKS and refreshes served by that loop.
        self._threads = ThreadPoolExecutor(
            concurrency, thread_name_prefix="bcrypt", initializer=_lower_priority
        )
        self._queue_limit = queue_limit
        self._queue_timeout = queue_timeout
        self._in_flight = 0
        self._hash_seconds: float | None = None  # how long a hash has been taking, wall clock
        # Verified against when the account does not exist, so that an unknown
        # e-mail costs exactly what a wrong password does.
        self._dummy_hash = bcrypt.hashpw(b"taskstack-dummy", bcrypt.gensalt(cost)).decode()

    async def hash(self, password: str) -> str:
        prehashed = _prehash(password, self._pepper)
        salt = bcrypt.gensalt(self.cost)
        return (await self._run(lambda: bcrypt.hashpw(prehashed, salt))).decode()

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check ``password``; with no hash (unknown account) spend the same time and fail."""
        if len(password) > MAX_LENGTH or not _encodable(password):
            password = ""  # still hashed below: the same cost as any other failure
        prehashed = _prehash(password, self._pepper)
        expected = (password_hash or self._dummy_hash).encode()
        matches = await self._run(lambda: bcrypt.checkpw(prehashed, expected))
        return matches and password_hash is not None and password != ""

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def needs_rehash(self, password_hash: str) -> bool:
        return bcrypt_cost(password_hash) < self.cost

    @property
    def full(self) -> bool:
        """Whether a flow that hashes would be refused now: every place is taken, or the
        newcomer's turn would come later than the queue timeout at the pace hashes have
        been finishing (a hash shares its core, so under load it runs slower than alone).
        Waiting past the timeout would only end in a slow 503 instead of a fast one."""
        threads = self._limiter.total_tokens
        if self._in_flight >= threads + self._queue_limit:
            return True
        if self._hash_seconds is None:
            return False
        rounds_before_its_turn = self._in_flight / threads
        return rounds_before_its_turn * self._hash_seconds > self._queue_timeout

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """A place among the flows that hash, held from the flow's start to its end.

        Taken before a sign-in reads the database, so that a refused one costs
        no database work and never queues for a connection: in a storm, the
        sign-ins past the bound are refused at once instead of each holding a
        connection first (which kept refreshes waiting for the pool). Raises
        the 503 when the bound is reached.
        """
        if _admitted.get() is self:
            yield  # a nested flow: its place is already held
            return
        if self.full:
            raise HashingOverloaded()
        self._in_flight += 1
        held = _admitted.set(self)
        try:
            yield
        finally:
            _admitted.reset(held)
            self._in_flight -= 1

    async def _run(self, work: Callable[[], T]) -> T:
        with self.admission():
            try:
                with anyio.fail_after(self._queue_timeout):
                    await self._limiter.acquire()
            except TimeoutError:
                raise HashingOverloaded() from None
            try:
                started = time.monotonic()
                result = await asyncio.get_running_loop().run_in_executor(self._threads, work)
                self._record_hash_time(time.monotonic() - started)
                return result
            finally:
                self._limiter.release()

    def _record_hash_time(self, seconds: float) -> None:
        # A moving average: the pace of the last several hashes, not of the first.
        previous = self._hash_seconds
        self._hash_seconds = seconds if previous is None else previous + 0.2 * (seconds - previous)


# The hasher whose admission the running task holds (hashes inside it are not counted twice).
_admitted: contextvars.ContextVar[PasswordHasher | None] = contextvars.ContextVar(
    "taskstack_hash_admission", default=None
)


HASH_THREAD_NICENESS = 10


def _lower_priority() -> None:
    # Linux schedules threads individually: this lowers only the hashing thread.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)
