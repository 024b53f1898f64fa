"""The floor answers as the service does: checked before anything is measured.

A floor that wrote fewer bytes, or other ones, would flatter itself. For a
few requests of each mix, the service (with a token) and the floor (with
``x-owner``) must answer with the same status and, for the reads, the same
body byte for byte. A write makes a new version, with its own id or times,
so the bodies of create and patch must have the same members in the same
order with the same values, except those.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from taskstack.bench.wrk import Request

# Each floor scenario and the service scenario it answers for.
FLOORS = {
    "floor-list": "list",
    "floor-get": "get",
    "floor-create": "create",
    "floor-patch": "patch",
}
EXACT = frozenset({"floor-list", "floor-get"})
# What a write sets anew each time it runs.
VOLATILE = ("id", "created_at", "updated_at", "completed_at", "version")
SAMPLES = 3  # requests of each mix: different owners, bodies and tasks
TIMEOUT = 10.0


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def first_difference(a: bytes, b: bytes) -> int | None:
    """The offset of the first byte where ``a`` and ``b`` differ; None when equal."""
    if a == b:
        return None
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def masked(body: bytes) -> bytes:
    """A write's answer with what each write sets anew nulled, members kept in order."""
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(document, dict):
        return body
    return orjson.dumps({k: None if k in VOLATILE else v for k, v in document.items()})


def compare(scenario: str, service: Answer, floor: Answer) -> str | None:
    """None when the floor answered as the service did; else what differs, and where."""
    if service.status != floor.status:
        return f"{scenario}: the service answered {service.status}, the floor {floor.status}"
    if scenario in EXACT:
        ours, theirs, what = service.body, floor.body, "body"
    else:
        ours, theirs = masked(service.body), masked(floor.body)
        what = f"body (with {', '.join(VOLATILE)} nulled)"
    offset = first_difference(ours, theirs)
    if offset is None:
        return None
    start = max(0, offset - 20)
    return (
        f"{scenario}: the floor's {what} differs from the service's at byte {offset}: "
        f"service {ours[start : offset + 20]!r}, floor {theirs[start : offset + 20]!r}"
    )


def send(client: httpx.Client, base_url: str, request: Request) -> Answer:
    response = client.request(
        request.method,
        base_url + request.path,
        headers=dict(request.headers),
        content=None if request.body is None else request.body.encode(),
    )
    return Answer(response.status_code, response.content)


def check(
    scenario: str,
    service_url: str,
    service_requests: Sequence[Request],
    floor_url: str,
    floor_requests: Sequence[Request],
) -> str | None:
    """Send the first few requests of a mix to both; the first difference, if any."""
    with httpx.Client(timeout=TIMEOUT) as client:
        pairs = zip(service_requests, floor_requests, strict=True)
        for service_request, floor_request in list(pairs)[:SAMPLES]:
            service = send(client, service_url, service_request)
            floor = send(client, floor_url, floor_request)
            if problem := compare(scenario, service, floor):
                return f"{problem} ({service_request.method} {service_request.path})"
    return None
