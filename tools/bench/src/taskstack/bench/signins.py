"""Sign-ins during the login storm: live refresh tokens to start from, and a one-at-a-time probe."""

import threading
import time
from collections.abc import Iterator

import httpx

from taskstack.bench.processes import Server
from taskstack.bench.report import Probe
from taskstack.bench.seed import DataSet, SeededUser
from taskstack.dev.errors import CliError

SHED = frozenset({429, 503})  # how an overloaded auth service may refuse a sign-in


def refresh_tokens(auth: Server, data: DataSet, count: int) -> list[str]:
    """Live refresh tokens from real sign-ins, for the refresh load to start from."""
    tokens = []
    with httpx.Client(base_url=auth.url, timeout=60) as client:
        for user in data.users[:count]:
            answer = client.post(
                "/v1/auth/token",
                data={"grant_type": "password", "username": user.email, "password": data.password},
            )
            if answer.status_code != 200:
                raise CliError(f"a sign-in for the refresh scenario got HTTP {answer.status_code}")
            tokens.append(answer.json()["refresh_token"])
    return tokens


def probe(auth: Server, data: DataSet, seconds: int) -> Probe:
    """One sign-in at a time while the storm runs, recording how fast each is answered."""
    statuses: dict[int, int] = {}
    shed: list[float] = []
    deadline = time.monotonic() + seconds

    def send() -> None:
        with httpx.Client(base_url=auth.url, timeout=30) as client:
            for user in _cycle(data):
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                try:
                    status = client.post(
                        "/v1/auth/token",
                        data={
                            "grant_type": "password",
                            "username": user.email,
                            "password": data.password,
                        },
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                elapsed_ms = (time.perf_counter() - started) * 1000
                statuses[status] = statuses.get(status, 0) + 1
                if status in SHED:
                    shed.append(elapsed_ms)
                time.sleep(0.2)

    thread = threading.Thread(target=send, name="storm-probe")
    thread.start()
    thread.join(seconds + 60)
    return Probe(statuses, shed)


def _cycle(data: DataSet) -> Iterator[SeededUser]:
    while True:
        yield from data.users
