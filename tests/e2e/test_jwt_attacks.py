"""Item 8: the JWT attack set against every protected route of both services, through nginx."""

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.harness import Stack, new_user
from tests.e2e.report import Reliability
from tests.support.auth import bearer
from tests.support.tokens import attack_tokens

pytestmark = pytest.mark.e2e

# What each protected operation is sent: valid in every way but the token, so a
# refusal can only be about the token. A wrong If-Match keeps the well-made
# control token from changing anything (412 means "authenticated").
CHANGE = {"If-Match": '"999"'}
REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1/auth/me"): {},
    # A wrong password: the well-made control token deletes nothing (400 means
    # "authenticated").
    ("DELETE", "/v1/auth/me"): {"json": {"password": "not the current one"}},
    ("POST", "/v1/auth/password"): {
        "json": {"current_password": "not the current one", "new_password": "another fine one"}
    },
    ("GET", "/v1/tasks"): {},
    ("POST", "/v1/tasks"): {"json": {"title": "planted"}},
    ("DELETE", "/v1/tasks"): {"params": {"completed": "true"}},
    ("GET", "/v1/tasks/{task_id}"): {},
    ("PUT", "/v1/tasks/{task_id}"): {"json": {"title": "replaced"}, "headers": CHANGE},
    ("PATCH", "/v1/tasks/{task_id}"): {"json": {"title": "patched"}, "headers": CHANGE},
    ("DELETE", "/v1/tasks/{task_id}"): {"headers": CHANGE},
}
CONTROL = {
    ("GET", "/v1/auth/me"): 200,
    ("DELETE", "/v1/auth/me"): 400,
    ("POST", "/v1/auth/password"): 400,
    ("GET", "/v1/tasks"): 200,
    ("POST", "/v1/tasks"): 201,
    ("DELETE", "/v1/tasks"): 200,
    ("GET", "/v1/tasks/{task_id}"): 200,
    ("PUT", "/v1/tasks/{task_id}"): 412,
    ("PATCH", "/v1/tasks/{task_id}"): 412,
    ("DELETE", "/v1/tasks/{task_id}"): 412,
}


def protected_operations(client: httpx.Client) -> set[tuple[str, str]]:
    """Every operation that needs a token, from the services' own OpenAPI documents."""
    operations = set()
    for document in ("/v1/auth/openapi.json", "/v1/tasks/openapi.json"):
        for path, item in client.get(document).json()["paths"].items():
            for method, operation in item.items():
                if operation.get("security"):
                    operations.add((method.upper(), path))
    return operations


@dataclass
class Answer:
    attack: str
    operation: tuple[str, str]
    response: httpx.Response

    @property
    def from_gateway(self) -> bool:
        """nginx's own answer (the token made the header larger than nginx reads)."""
        return "x-request-id" not in self.response.headers


def send(
    client: httpx.Client, operation: tuple[str, str], token: str, task_id: str
) -> httpx.Response:
    method, path = operation
    spec = REQUESTS[operation]
    headers = {**spec.get("headers", {}), **bearer(token)}
    url = path.format(task_id=task_id)
    return client.request(
        method, url, json=spec.get("json"), params=spec.get("params"), headers=headers
    )


def test_no_attack_token_is_accepted_anywhere(stack: Stack, reliability: Reliability) -> None:
    client = stack.client()
    victim = new_user(client, "victim")
    task = client.post("/v1/tasks", json={"title": "victim's"}, headers=victim.headers).json()
    operations = protected_operations(client)
    assert operations == set(REQUESTS), "a protected route without an attack request"

    mint = stack.mint()
    attacks = attack_tokens(mint, uuid.UUID(str(victim.id)))
    answers = [
        Answer(name, operation, send(client, operation, token, task["id"]))
        for name, token in attacks.items()
        for operation in sorted(operations)
    ]
    # The same requests with a well-made token get through: the routes really are reachable.
    control = {
        op: send(client, op, mint.token(victim.id), task["id"]).status_code for op in CONTROL
    }

    accepted = [a for a in answers if a.response.status_code < 400]
    server_errors = [a for a in answers if a.response.status_code >= 500]
    by_service = [a for a in answers if not a.from_gateway]
    by_gateway = [a for a in answers if a.from_gateway]
    statuses = Counter(a.response.status_code for a in by_service)
    reliability.record(
        8,
        "JWT attacks through the gateway",
        f"{len(attacks)} tokens x {len(operations)} protected routes = {len(answers)} requests: "
        f"{len(accepted)} accepted, {len(server_errors)} 5xx; services answered "
        f"{dict(statuses)}, nginx refused {len(by_gateway)} "
        f"(header over its buffer: {sorted({a.attack for a in by_gateway})})",
    )
    assert control == CONTROL
    assert [(a.attack, a.operation) for a in accepted] == []
    assert [(a.attack, a.operation) for a in server_errors] == []
    assert statuses == {401: len(by_service)}
    assert all(
        a.response.headers["content-type"] == "application/problem+json"
        and a.response.headers["www-authenticate"].startswith("Bearer")
        for a in by_service
    )
    # Only tokens too large for any header line ever stop at the gateway.
    assert {a.attack for a in by_gateway} <= {"kid 10 kB", "oversized"}
    assert all(a.response.status_code == 400 for a in by_gateway)
    after = client.get(f"/v1/tasks/{task['id']}", headers=victim.headers).json()
    assert after == task, "the victim's task is untouched"
