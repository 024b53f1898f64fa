"""Unknown e-mail and wrong password take the same time (run alone: pytest -m timing)."""

import statistics
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.main import create_app
from tests.support.auth import auth_settings, login, register
from tests.support.servers import serve

TRIALS = 31


@pytest.mark.timing
def test_unknown_email_and_wrong_password_take_the_same_time(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    # A realistic cost (about 0.1 s here), so the hash dominates as in production.
    settings = auth_settings(
        migrated_database,
        keys_dir,
        auth_bcrypt_cost=10,
        auth_login_failures_per_account=1000,
        auth_login_failures_per_ip=1000,
    )
    samples: dict[str, list[float]] = {"wrong password": [], "unknown email": []}
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=30) as c:
        register(c, "ada@example.com")
        for trial in range(TRIALS + 2):
            for kind, email in (
                ("wrong password", "ada@example.com"),
                ("unknown email", "zed@example.com"),
            ):
                started = time.perf_counter()
                assert login(c, email, "not the right password").status_code == 400
                if trial >= 2:  # warm-up
                    samples[kind].append(time.perf_counter() - started)
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    # Each pair ran back to back, so a noisy neighbour slows both alike: compare pairs.
    ratio = statistics.median(
        unknown / wrong
        for unknown, wrong in zip(samples["unknown email"], samples["wrong password"], strict=True)
    )
    print(f"median login time: {medians}, median paired ratio {ratio:.3f}")
    assert 0.9 <= ratio <= 1.1


def _paired_ratio(samples: dict[str, list[float]], first: str, second: str) -> float:
    return statistics.median(a / b for a, b in zip(samples[first], samples[second], strict=True))


@pytest.mark.timing
def test_a_taken_and_a_new_address_register_in_the_same_time(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    settings = auth_settings(
        migrated_database, keys_dir, auth_bcrypt_cost=10, auth_registrations_per_ip=1000
    )
    samples: dict[str, list[float]] = {"taken": [], "new": []}
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=30) as c:
        register(c, "ada@example.com")
        for trial in range(TRIALS + 2):
            for kind, email in (("taken", "ada@example.com"), ("new", f"n{trial}@example.com")):
                started = time.perf_counter()
                assert register(c, email).status_code == 202
                if trial >= 2:
                    samples[kind].append(time.perf_counter() - started)
    ratio = _paired_ratio(samples, "new", "taken")
    print(f"median paired registration ratio new/taken {ratio:.3f}")
    assert 0.9 <= ratio <= 1.1


@pytest.mark.timing
def test_a_reset_for_a_known_and_an_unknown_address_take_the_same_time(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    settings = auth_settings(
        migrated_database,
        keys_dir,
        auth_mail_requests_per_address=1000,
        auth_mail_requests_per_ip=1000,
    )
    samples: dict[str, list[float]] = {"known": [], "unknown": []}
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url, timeout=30) as c:
        register(c, "ada@example.com")
        for trial in range(TRIALS * 3 + 5):
            for kind, email in (("known", "ada@example.com"), ("unknown", "zed@example.com")):
                started = time.perf_counter()
                answer = c.post("/v1/auth/password-reset", json={"email": email})
                assert answer.status_code == 202
                if trial >= 5:
                    samples[kind].append(time.perf_counter() - started)
    ratio = _paired_ratio(samples, "unknown", "known")
    print(f"median paired reset-request ratio unknown/known {ratio:.3f}")
    assert 0.9 <= ratio <= 1.1
