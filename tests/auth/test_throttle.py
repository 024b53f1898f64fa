"""Failed-login throttling, shared by every replica through PostgreSQL."""

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.main import create_app
from tests.support.auth import auth_settings, login, register
from tests.support.servers import serve

WRONG = "definitely not the password"


def attempts_until_throttled(clients: list[httpx.Client], email: str, limit: int = 20) -> int:
    """Wrong passwords sent round-robin over ``clients``: the attempt that first gets 429."""
    for attempt in range(1, limit + 1):
        response = login(clients[attempt % len(clients)], email, WRONG)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            return attempt
        assert response.status_code == 400
    raise AssertionError("never throttled")


@pytest.fixture
def replicas(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> Iterator[list[httpx.Client]]:
    """Two auth instances on one database, as two pods behind a round-robin gateway."""
    settings = auth_settings(migrated_database, keys_dir, auth_login_failures_per_account=3)
    with ExitStack() as stack:
        clients = [
            stack.enter_context(
                httpx.Client(base_url=stack.enter_context(serve(create_app(settings))))
            )
            for _ in range(2)
        ]
        yield clients


def test_two_replicas_throttle_at_the_same_attempt_as_one(replicas: list[httpx.Client]) -> None:
    register(replicas[0], "ada@example.com")
    register(replicas[0], "bob@example.com")
    assert attempts_until_throttled(replicas[:1], "ada@example.com") == 4
    assert attempts_until_throttled(replicas, "bob@example.com") == 4


def test_a_throttled_account_is_refused_even_with_the_right_password(
    replicas: list[httpx.Client],
) -> None:
    register(replicas[0], "ada@example.com")
    attempts_until_throttled(replicas, "ada@example.com")
    assert login(replicas[1], "ada@example.com").status_code == 429


def test_unknown_accounts_are_throttled_alike(replicas: list[httpx.Client]) -> None:
    assert attempts_until_throttled(replicas, "nobody@example.com") == 4


def test_the_delay_escalates_rather_than_locking_out(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    settings = auth_settings(
        migrated_database,
        keys_dir,
        auth_login_failures_per_account=2,
        auth_throttle_base_delay_seconds=1,
        auth_throttle_max_delay_seconds=4,
    )
    with serve(create_app(settings)) as base_url, httpx.Client(base_url=base_url) as client:
        register(client, "ada@example.com")
        login(client, "ada@example.com", WRONG)
        login(client, "ada@example.com", WRONG)  # the limit: blocked for 1 s
        assert login(client, "ada@example.com").headers["retry-after"] == "1"
        time.sleep(1.1)
        login(client, "ada@example.com", WRONG)  # one more failure: 2 s
        assert login(client, "ada@example.com").headers["retry-after"] == "2"
        time.sleep(2.1)
        assert login(client, "ada@example.com").status_code == 200  # the owner gets in


def test_a_success_clears_the_account_count(client: httpx.Client) -> None:
    register(client, "ada@example.com")
    for _ in range(4):
        assert login(client, "ada@example.com", WRONG).status_code == 400
    assert login(client, "ada@example.com").status_code == 200
    for _ in range(4):
        assert login(client, "ada@example.com", WRONG).status_code == 400


def test_forged_forwarded_for_from_an_untrusted_peer_gains_nothing(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    settings = auth_settings(migrated_database, keys_dir, auth_login_failures_per_ip=3)
    # The peer (127.0.0.1) is not a trusted proxy here, so X-Forwarded-For is ignored.
    with (
        serve(create_app(settings), trusted_proxies="10.9.9.9") as base_url,
        httpx.Client(base_url=base_url) as client,
    ):
        statuses = [
            login(
                client, f"user{i}@example.com", WRONG, **{"X-Forwarded-For": f"198.51.100.{i}"}
            ).status_code
            for i in range(5)
        ]
    assert statuses == [400, 400, 400, 429, 429]


def test_behind_a_trusted_proxy_the_real_client_is_counted_not_the_forged_part(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    settings = auth_settings(migrated_database, keys_dir, auth_login_failures_per_ip=3)
    with (
        serve(create_app(settings), trusted_proxies="127.0.0.1") as base_url,
        httpx.Client(base_url=base_url) as client,
    ):
        # The client forged the first entry; the gateway appended the address it saw.
        forged = [
            login(
                client,
                f"user{i}@example.com",
                WRONG,
                **{"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7"},
            ).status_code
            for i in range(4)
        ]
        other_client = login(client, "x@example.com", WRONG, **{"X-Forwarded-For": "203.0.113.8"})
    assert forged == [400, 400, 400, 429]
    assert other_client.status_code == 400
