"""Item 1: a client's whole journey through the nginx gateway, followed by its trace id."""

import pytest

from tests.e2e.harness import Stack
from tests.e2e.journey import Trace, access_records, records_with_trace, the_whole_journey
from tests.e2e.report import Reliability
from tests.support.auth import bearer
from tests.support.tokens import TokenMint

pytestmark = pytest.mark.e2e

JWKS = ("GET", "/.well-known/jwks.json")


def test_the_whole_journey_through_the_gateway(stack: Stack, reliability: Reliability) -> None:
    the_whole_journey(stack, reliability)


def test_one_request_chain_crosses_both_services_under_one_trace(
    stack: Stack, reliability: Reliability
) -> None:
    """A token signed with a key tasks has not seen makes it refetch the JWKS from auth.

    The refetch happens inside the request, so auth's log of the JWKS request
    carries the trace id the client started.
    """
    trace = Trace()
    rotated_in = TokenMint(kid="a-key-not-yet-published", issuer=stack.gateway)
    client = stack.client()
    answer = client.get("/v1/tasks", headers={**bearer(rotated_in.token()), **trace.headers()})
    assert answer.status_code == 401
    in_tasks = records_with_trace(stack, trace.trace_id, "tasks", routes=[("GET", "/v1/tasks")])
    in_auth = records_with_trace(stack, trace.trace_id, "auth", routes=[JWKS])
    assert access_records(in_tasks) == {("GET", "/v1/tasks")}
    assert access_records(in_auth) == {JWKS}
    said = [str(r["message"]) for r in in_tasks]
    assert "access token refused" in said
    assert any("/.well-known/jwks.json" in message for message in said), "tasks logged the fetch"
    reliability.record(
        1,
        "End-to-end journey",
        f"a tasks request and the JWKS fetch it caused in auth share trace {trace.trace_id[:8]}…",
    )


def test_the_gateway_routes_like_the_ingress(stack: Stack) -> None:
    client = stack.client()
    routed = {
        path: client.get(path)
        for path in ("/.well-known/jwks.json", "/v1/auth/openapi.json", "/v1/tasks/openapi.json")
    }
    assert {path: r.status_code for path, r in routed.items()} == dict.fromkeys(routed, 200)
    assert all("x-request-id" in r.headers for r in routed.values()), "a service answered"
    # Health, metrics and anything outside the public prefixes stay inside the cluster.
    unrouted = {
        path: client.get(path)
        for path in ("/livez", "/readyz", "/metrics", "/v1/authx", "/v1/tasksx/1", "/")
    }
    assert {path: r.status_code for path, r in unrouted.items()} == dict.fromkeys(unrouted, 404)
    assert not any("x-request-id" in r.headers for r in unrouted.values()), "nginx answered"
