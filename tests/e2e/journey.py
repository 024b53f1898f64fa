"""A client's whole journey through the gateway, and trace context to follow it in the logs."""

import secrets
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.harness import Stack
from tests.e2e.report import Reliability
from tests.support.auth import STRONG_PASSWORD, bearer


class Trace:
    """W3C trace context for a chain of requests: one trace id, a new parent span per request."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)

    def headers(self) -> dict[str, str]:
        return {"traceparent": f"00-{self.trace_id}-{secrets.token_hex(8)}-01"}


@dataclass
class Journey:
    trace: Trace
    requests: int = 0
    unexpected: list[str] = field(default_factory=list)

    def expect(
        self, status: int, send: Callable[..., httpx.Response], *args: Any, **kwargs: Any
    ) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), **self.trace.headers()}
        response = send(*args, headers=headers, **kwargs)
        self.requests += 1
        if response.status_code != status:
            self.unexpected.append(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} (expected {status}) {response.text[:200]}"
            )
        return response


def run_journey(stack: Stack[Any]) -> Journey:
    """register → token → create/list/patch/delete tasks → refresh → revoke → refused.

    Every request carries the same trace id; the caller checks ``unexpected``.
    """
    journey = Journey(Trace())
    client = stack.client()
    expect = journey.expect
    email = f"journey-{uuid.uuid4().hex[:10]}@example.com"

    def post_form(path: str, data: dict[str, str]) -> Callable[..., httpx.Response]:
        return lambda headers: client.post(path, data=data, headers=headers)

    def grant(data: dict[str, str]) -> Callable[..., httpx.Response]:
        return post_form("/v1/auth/token", data)

    registration = {"email": email, "password": STRONG_PASSWORD}
    user = expect(202, client.post, "/v1/auth/register", json=registration).json()
    password = {"grant_type": "password", "username": email, "password": STRONG_PASSWORD}
    tokens = expect(200, grant(password)).json()
    auth = bearer(tokens["access_token"])
    me = expect(200, client.get, "/v1/auth/me", headers=auth).json()
    assert me["email"] == user["email"]

    created = [
        expect(201, client.post, "/v1/tasks", json={"title": f"task {n}"}, headers=auth)
        for n in range(3)
    ]
    first, second = created[0], created[1]
    listed = expect(200, client.get, "/v1/tasks", params={"limit": 2}, headers=auth)
    # The next page's Link, followed through the gateway, brings the rest.
    following = expect(200, client.get, listed.links["next"]["url"], headers=auth)
    pages = listed.json()["items"] + following.json()["items"]
    assert sorted(t["id"] for t in pages) == sorted(r.json()["id"] for r in created)
    url = f"/v1/tasks/{first.json()['id']}"
    current = {**auth, "If-Match": first.headers["ETag"]}
    patched = expect(200, client.patch, url, json={"completed": True}, headers=current)
    assert patched.json()["completed"] is True
    expect(412, client.patch, url, json={"title": "stale"}, headers=current)
    expect(200, client.get, url, headers=auth)
    doomed = f"/v1/tasks/{second.json()['id']}"
    expect(204, client.delete, doomed, headers={**auth, "If-Match": second.headers["ETag"]})
    expect(404, client.get, doomed, headers=auth)

    first_refresh = tokens["refresh_token"]
    rotated = expect(
        200, grant({"grant_type": "refresh_token", "refresh_token": first_refresh})
    ).json()
    assert rotated["refresh_token"] != first_refresh
    expect(200, client.get, "/v1/tasks", headers=bearer(rotated["access_token"]))
    expect(200, post_form("/v1/auth/revoke", {"token": rotated["refresh_token"]}))
    for old in (rotated["refresh_token"], first_refresh):  # revoked; replaced by the rotation
        refused = expect(400, grant({"grant_type": "refresh_token", "refresh_token": old}))
        assert refused.json()["error"] == "invalid_grant"
    return journey


def records_with_trace(
    stack: Stack[Any],
    trace_id: str,
    service: str,
    *,
    routes: Collection[tuple[str, str]] = (),
    wait: float = 5.0,
) -> list[dict[str, Any]]:
    """``service``'s log records carrying ``trace_id``, once the access records of ``routes``
    (method, route template) are among them: a service logs a request after answering it.
    """
    deadline = time.monotonic() + wait
    while True:
        found = [r for r in stack.logs(service) if r.get("trace_id") == trace_id]
        logged = access_records(found)
        if (found and set(routes) <= logged) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def access_records(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(r["method"], r["route"]) for r in records if r.get("message") == "request"}


AUTH_ROUTES = {
    ("POST", "/v1/auth/register"),
    ("POST", "/v1/auth/token"),
    ("GET", "/v1/auth/me"),
    ("POST", "/v1/auth/revoke"),
}
TASKS_ROUTES = {
    ("POST", "/v1/tasks"),
    ("GET", "/v1/tasks"),
    ("PATCH", "/v1/tasks/{task_id}"),
    ("GET", "/v1/tasks/{task_id}"),
    ("DELETE", "/v1/tasks/{task_id}"),
}


def the_whole_journey(stack: Stack[Any], reliability: Reliability) -> None:
    """Item 1: the journey, every answer as expected, its trace id in both services' logs
    (for the access records of every route it took)."""
    journey = run_journey(stack)
    trace_id = journey.trace.trace_id
    in_auth = records_with_trace(stack, trace_id, "auth", routes=AUTH_ROUTES)
    in_tasks = records_with_trace(stack, trace_id, "tasks", routes=TASKS_ROUTES)
    reliability.record(
        1,
        "End-to-end journey",
        f"{journey.requests} requests, {len(journey.unexpected)} unexpected answers; "
        f"trace {trace_id[:8]}… in {len(in_auth)} auth and {len(in_tasks)} tasks log records",
        label=stack.label,
    )
    assert journey.unexpected == []
    assert access_records(in_auth) >= AUTH_ROUTES
    assert access_records(in_tasks) >= TASKS_ROUTES
