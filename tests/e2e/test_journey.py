"""Item 1: a client's whole journey through the nginx gateway, followed by its trace id."""

from collections.abc import Iterator

import pytest

from tests.e2e.cluster import PrivateCluster
from tests.e2e.harness import Stack, run_stack
from tests.e2e.journey import Trace, records_with_trace, run_journey
from tests.e2e.report import Reliability
from tests.support.auth import bearer
from tests.support.tokens import TokenMint

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def traced_stack(cluster: PrivateCluster) -> Iterator[Stack]:
    # No cooldown: a token with an unknown key id makes tasks refetch auth's JWKS at once.
    with run_stack(cluster, tasks_env={"JWKS_REFETCH_COOLDOWN_SECONDS": "0"}) as stack:
        yield stack


def test_the_whole_journey_through_the_gateway(
    traced_stack: Stack, reliability: Reliability
) -> None:
    journey = run_journey(traced_stack)
    trace_id = journey.trace.trace_id
    in_auth = records_with_trace(traced_stack, trace_id, "auth")
    in_tasks = records_with_trace(traced_stack, trace_id, "tasks")
    reliability.record(
        1,
        "End-to-end journey",
        f"{journey.requests} requests, {len(journey.unexpected)} unexpected answers; "
        f"trace {trace_id[:8]}… in {len(in_auth)} auth and {len(in_tasks)} tasks log records",
    )
    assert journey.unexpected == []
    routes = {(r.get("method"), r.get("route")) for r in in_auth + in_tasks if "route" in r}
    assert ("POST", "/v1/auth/token") in routes
    assert ("POST", "/v1/tasks") in routes
    assert ("DELETE", "/v1/tasks/{task_id}") in routes


def test_one_request_chain_crosses_both_services_under_one_trace(
    traced_stack: Stack, reliability: Reliability
) -> None:
    """A token signed with a key tasks has not seen makes it refetch the JWKS from auth.

    The refetch happens inside the request, so auth's log of the JWKS request
    carries the trace id the client started.
    """
    trace = Trace()
    rotated_in = TokenMint(kid="a-key-not-yet-published", issuer=traced_stack.gateway)
    client = traced_stack.client()
    answer = client.get("/v1/tasks", headers={**bearer(rotated_in.token()), **trace.headers()})
    assert answer.status_code == 401
    in_tasks = records_with_trace(traced_stack, trace.trace_id, "tasks")
    in_auth = records_with_trace(traced_stack, trace.trace_id, "auth")
    assert {r.get("route") for r in in_tasks} >= {"/v1/tasks"}
    assert [r.get("path") for r in in_auth if "route" in r] == ["/.well-known/jwks.json"]
    reliability.record(
        1,
        "End-to-end journey",
        f"a tasks request and the JWKS fetch it caused in auth share trace {trace.trace_id[:8]}…",
    )
