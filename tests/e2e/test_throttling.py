"""Item 6: login throttling holds across replicas behind nginx, and forged X-Forwarded-For is moot.

nginx overwrites X-Forwarded-For with the address it took the connection
from, and auth believes that header only from nginx's address; so the per-IP
count is keyed on the client's real address, whatever the client claims.
"""

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack, json_lines, new_user, run_stack
from tests.e2e.report import Reliability
from tests.support.auth import login

pytestmark = pytest.mark.e2e

TITLE = "Throttling across replicas"
PER_ACCOUNT = 5
PER_IP = 12
LIMITS = {
    "AUTH_LOGIN_FAILURES_PER_ACCOUNT": str(PER_ACCOUNT),
    "AUTH_LOGIN_FAILURES_PER_IP": str(PER_IP),
}
WRONG = "definitely not the password"
# Another loopback address: a second, genuinely different client.
OTHER_CLIENT = "127.0.0.2"


@pytest.fixture(scope="module")
def one_replica(cluster: PrivateCluster) -> Iterator[Stack]:
    with run_stack(cluster, auth_replicas=1, tasks_replicas=0, auth_env=LIMITS) as stack:
        yield stack


@pytest.fixture(scope="module")
def two_replicas(cluster: PrivateCluster) -> Iterator[Stack]:
    with run_stack(cluster, auth_replicas=2, tasks_replicas=0, auth_env=LIMITS) as stack:
        yield stack


@pytest.fixture(autouse=True)
def no_counts_yet(one_replica: Stack, two_replicas: Stack) -> None:
    """Each test starts with no failure counted (all tests share the client's address)."""
    for stack in (one_replica, two_replicas):
        stack.postgres.query("DELETE FROM auth.throttle_counter", database=stack.database)


def forged_addresses() -> Iterator[dict[str, str]]:
    for n in itertools.count(1):
        yield {"X-Forwarded-For": f"203.0.{n // 250}.{n % 250 + 1}"}


def attempts_until_throttled(
    client: httpx.Client,
    emails: Iterator[str],
    headers: Iterator[dict[str, str]] | None = None,
    limit: int = 40,
) -> int:
    """Wrong passwords until the first 429: the number of that attempt."""
    for attempt in range(1, limit + 1):
        response = login(client, next(emails), WRONG, **(next(headers) if headers else {}))
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            return attempt
        assert response.status_code == 400, response.text
    raise AssertionError(f"not throttled after {limit} attempts")


def login_failures(stack: Stack) -> list[list[str]]:
    """Per auth replica: the client address of each failed login it logged."""
    return [
        [
            str(r.get("client_ip"))
            for r in json_lines(replica.log())
            if r.get("message") == "login failed"
        ]
        for replica in stack.auth
    ]


def emails(prefix: str) -> Iterator[str]:
    return (f"{prefix}-{n}@example.com" for n in itertools.count())


def test_two_replicas_throttle_one_account_at_the_same_attempt_as_one(
    one_replica: Stack, two_replicas: Stack, reliability: Reliability
) -> None:
    counts = []
    for stack in (one_replica, two_replicas):
        victim = new_user(stack.client(), "victim")
        counts.append(attempts_until_throttled(stack.client(), itertools.repeat(victim.email)))
    per_replica = [len(failures) for failures in login_failures(two_replicas)]
    reliability.record(
        6,
        TITLE,
        f"one account: 429 at attempt {counts[0]} with 1 auth replica, {counts[1]} with 2 "
        f"behind round-robin (failures per replica {per_replica})",
    )
    assert counts == [PER_ACCOUNT + 1, PER_ACCOUNT + 1]
    assert all(per_replica), "both replicas took part"


def test_forged_forwarded_for_does_not_reset_the_account_count(
    two_replicas: Stack, reliability: Reliability
) -> None:
    victim = new_user(two_replicas.client(), "victim")
    attempts = attempts_until_throttled(
        two_replicas.client(), itertools.repeat(victim.email), forged_addresses()
    )
    reliability.record(
        6, TITLE, f"one account, a new forged X-Forwarded-For each try: 429 at attempt {attempts}"
    )
    assert attempts == PER_ACCOUNT + 1


def test_forged_forwarded_for_does_not_reset_the_address_count(
    two_replicas: Stack, reliability: Reliability
) -> None:
    """Spread over many accounts, only the per-address count can stop the attack."""
    attempts = attempts_until_throttled(
        two_replicas.client(), emails("sprayed"), forged_addresses()
    )
    seen = {ip for failures in login_failures(two_replicas) for ip in failures}
    forged_at_gateway = two_replicas.nginx.access_log().count('xff="203.0.')
    # A genuinely different client (another source address) is not throttled.
    other = two_replicas.client(transport=httpx.HTTPTransport(local_address=OTHER_CLIENT))
    control = login(other, "someone-else@example.com", WRONG)
    reliability.record(
        6,
        TITLE,
        f"{attempts - 1} accounts sprayed from one address with forged X-Forwarded-For: "
        f"429 at attempt {attempts} (per-address limit {PER_IP}); another address: "
        f"{control.status_code}",
    )
    assert attempts == PER_IP + 1
    assert forged_at_gateway >= attempts, "the forged headers did reach the gateway"
    assert seen == {"127.0.0.1"}, "auth saw the address nginx saw, not the forged ones"
    assert control.status_code == 400
