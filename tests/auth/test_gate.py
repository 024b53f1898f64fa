"""The sign-in gate: while hashing is full, password sign-ins are refused before the framework."""

import threading
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import URL

from taskstack.auth.config import AuthSettings
from taskstack.auth.main import create_app
from tests.support.auth import auth_settings, login, refresh, register
from tests.support.servers import serve

PAUSE = 0.2


def overloaded_count(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('taskstack_auth_logins_total{result="overloaded"}'):
            return float(line.split()[-1])
    return 0.0


def one_hashing_place(
    database: URL, keys_dir: Path, *, pause: float, **overrides: Any
) -> AuthSettings:
    """One hashing place, no queue, and a hash slow enough (cost 13) to be caught holding it."""
    return auth_settings(
        database,
        keys_dir,
        auth_bcrypt_cost=13,
        auth_hash_concurrency=1,
        auth_hash_queue_limit=0,
        auth_overload_pause_seconds=pause,
        **overrides,
    )


def test_a_full_hasher_refuses_sign_ins_at_the_gate_and_lets_refreshes_through(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    settings = one_hashing_place(migrated_database, keys_dir, pause=PAUSE)
    with (
        serve(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        assert register(client, "gate@example.com").status_code == 202
        signed_in = login(client, "gate@example.com")
        assert signed_in.status_code == 200
        refresh_token = signed_in.json()["refresh_token"]
        overloaded_before = overloaded_count(client)

        holder: list[int] = []
        holding = threading.Thread(
            target=lambda: holder.append(
                login(httpx.Client(base_url=base_url, timeout=30), "gate@example.com").status_code
            )
        )
        holding.start()
        time.sleep(0.25)  # the holder is hashing now: a cost-13 hash takes over half a second
        # A refresh is not a sign-in: its body goes on to the route intact. (The
        # sign-in refused below proves the gate was closed when this was sent.)
        rotated = refresh(client, refresh_token)
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["refresh_token"] != refresh_token
        started = time.perf_counter()
        answer = login(client, "gate@example.com")
        elapsed = time.perf_counter() - started
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["status"] == 503 and answer.json()["request_id"]
        assert answer.headers["x-request-id"] == answer.json()["request_id"]
        # The pause (jittered, from half to one and a half of it) is kept, and nothing
        # else waits: no database work, no queue.
        assert 0.5 * PAUSE <= elapsed < 1.5 * PAUSE + 0.3

        holding.join(30)
        assert holder == [200]
        assert overloaded_count(client) > overloaded_before
        # With the place free again, the next sign-in goes through.
        assert login(client, "gate@example.com").status_code == 200


def test_paused_refusals_hold_no_admission_place(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    # Two admission places, no queue: one for the sign-in that is hashing, one for
    # everything else. A refused sign-in that kept its place through its pause
    # would leave none, and the requests below would be refused.
    pause = 1.0
    settings = one_hashing_place(
        migrated_database, keys_dir, pause=pause, admission_limit=2, admission_queue_limit=0
    )
    with (
        serve(create_app(settings)) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        assert register(client, "paused@example.com").status_code == 202
        answers: list[int] = []

        def sign_in() -> None:
            with httpx.Client(base_url=base_url, timeout=30) as own:
                answers.append(login(own, "paused@example.com").status_code)

        holding = threading.Thread(target=sign_in)
        holding.start()
        time.sleep(0.25)  # the holder is hashing now
        refused = [threading.Thread(target=sign_in) for _ in range(4)]
        for thread in refused:
            thread.start()
        time.sleep(0.2)  # every one of them is in its pause (0.5 s at the least)
        for _ in range(3):
            started = time.perf_counter()
            jwks = client.get("/.well-known/jwks.json")
            assert jwks.status_code == 200, jwks.text
            assert time.perf_counter() - started < 0.3 * pause
        for thread in [holding, *refused]:
            thread.join(30)
        assert sorted(answers) == [200, 503, 503, 503, 503]
