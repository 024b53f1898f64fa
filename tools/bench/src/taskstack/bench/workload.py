"""The requests each scenario cycles through, built from the seeded data.

Access tokens are minted with the benchmark's own signing key (the one auth
publishes in its JWKS), deep-page cursors with the tasks service's cursor
secret: both exactly as the services make them, without a request each.
"""

import dataclasses
import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import psycopg
from sqlalchemy.engine import URL

from taskstack.auth.keys import load_signing_keys
from taskstack.bench.database import libpq
from taskstack.bench.seed import TAGS, DataSet, SeededUser
from taskstack.bench.wrk import Request
from taskstack.tasks.cursor import CursorCodec, Position
from taskstack.tasks.listing import TaskListParams

MAX_REQUESTS = 2000  # per script: enough to spread over users and rows
TOKEN_SECONDS = 3600
_JSON = "application/json"


class Tokens:
    """Access tokens for the seeded users, signed by the benchmark's key."""

    def __init__(self, keys_dir: Path, *, issuer: str, audience: str):
        self._keys = load_signing_keys(keys_dir, None, production=False)
        self._issuer = issuer
        self._audience = audience
        self._tokens: dict[uuid.UUID, str] = {}
        self._owners: dict[str, uuid.UUID] = {}

    def headers(self, user: uuid.UUID, **extra: str) -> dict[str, str]:
        if user not in self._tokens:
            self._tokens[user] = self._keys.issue_access_token(
                user, issuer=self._issuer, audience=self._audience, lifetime=TOKEN_SECONDS
            )
            self._owners[self._tokens[user]] = user
        return {"Authorization": f"Bearer {self._tokens[user]}", **extra}

    def owner(self, authorization: str) -> uuid.UUID:
        """The user a header made by ``headers`` speaks for."""
        return self._owners[authorization.removeprefix("Bearer ")]


def livez() -> list[Request]:
    return [Request("GET", "/livez")]


def first_pages(data: DataSet, tokens: Tokens) -> list[Request]:
    return [Request("GET", "/v1/tasks", tokens.headers(u.id)) for u in data.users[:MAX_REQUESTS]]


def on_floor(requests: Sequence[Request], tokens: Tokens) -> list[Request]:
    """The same requests as the floor takes them: the caller's id in x-owner, no token."""
    floor = []
    for request in requests:
        headers = dict(request.headers)
        owner = tokens.owner(headers.pop("Authorization"))
        floor.append(dataclasses.replace(request, headers={"x-owner": str(owner), **headers}))
    return floor


def filtered_pages(data: DataSet, tokens: Tokens) -> list[Request]:
    """Open tasks carrying one tag (rotating through the tags)."""
    return [
        Request(
            "GET",
            "/v1/tasks?" + urlencode({"completed": "false", "tag": TAGS[i % len(TAGS)]}),
            tokens.headers(user.id),
        )
        for i, user in enumerate(data.users[:MAX_REQUESTS])
    ]


def deep_pages(database: URL, data: DataSet, tokens: Tokens, cursor_secret: bytes) -> list[Request]:
    """The page halfway down the lists of the busiest 5% of users, through a cursor."""
    codec = CursorCodec(cursor_secret)
    fingerprint = TaskListParams().fingerprint()
    busiest = sorted(data.users, key=lambda u: -u.tasks)[: max(1, len(data.users) // 20)]
    requests = []
    with psycopg.connect(libpq(database)) as conn:
        for user in busiest:
            created_at, task_id = _nth_task(conn, user, user.tasks // 2)
            cursor = codec.encode(
                Position(created_at, task_id), owner=user.id, fingerprint=fingerprint
            )
            path = "/v1/tasks?" + urlencode({"cursor": cursor})
            requests.append(Request("GET", path, tokens.headers(user.id)))
    return requests


def _nth_task(
    conn: psycopg.Connection, user: SeededUser, offset: int
) -> tuple[datetime, uuid.UUID]:
    row = conn.execute(
        "SELECT created_at, id FROM tasks.task WHERE owner_id = %s "
        "ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
        (user.id, offset),
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def sample_tasks(database: URL, count: int, seed: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(owner, task) pairs drawn at random from every task."""
    with psycopg.connect(libpq(database)) as conn:
        conn.execute("SELECT setseed(%s)", (1 / (seed + 1),))
        rows = conn.execute(
            "SELECT owner_id, id FROM tasks.task ORDER BY random() LIMIT %s", (count,)
        ).fetchall()
    return [(owner, task) for owner, task in rows]


def single_tasks(pairs: Sequence[tuple[uuid.UUID, uuid.UUID]], tokens: Tokens) -> list[Request]:
    return [Request("GET", f"/v1/tasks/{task}", tokens.headers(owner)) for owner, task in pairs]


def creations(data: DataSet, tokens: Tokens) -> list[Request]:
    rng = random.Random(2)  # noqa: S311 - reproducible bodies, not secrets
    due = datetime.now(UTC) + timedelta(days=7)
    requests = []
    for i, user in enumerate(data.users[:MAX_REQUESTS]):
        body = {
            "title": f"Bench task {i}",
            "description": "Created under load." if i % 3 == 0 else None,
            "priority": ("low", "normal", "high")[i % 3],
            "due_at": due.isoformat() if i % 2 == 0 else None,
            "tags": rng.sample(TAGS, i % 3),
        }
        headers = tokens.headers(user.id, **{"Content-Type": _JSON})
        requests.append(Request("POST", "/v1/tasks", headers, json.dumps(body)))
    return requests


def patches(pairs: Sequence[tuple[uuid.UUID, uuid.UUID]], tokens: Tokens) -> list[Request]:
    requests = []
    for i, (owner, task) in enumerate(pairs):
        body = {"priority": ("low", "normal", "high")[i % 3], "title": f"Renamed under load {i}"}
        headers = tokens.headers(owner, **{"Content-Type": "application/merge-patch+json"})
        requests.append(Request("PATCH", f"/v1/tasks/{task}", headers, json.dumps(body)))
    return requests


def logins(data: DataSet) -> list[Request]:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return [
        Request(
            "POST",
            "/v1/auth/token",
            form,
            urlencode({"grant_type": "password", "username": u.email, "password": data.password}),
        )
        for u in data.users[:MAX_REQUESTS]
    ]


def jwks() -> list[Request]:
    return [Request("GET", "/.well-known/jwks.json")]
