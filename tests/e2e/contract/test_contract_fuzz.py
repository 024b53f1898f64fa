"""Issue 7, item 9: schemathesis fuzzes each service's OpenAPI contract over real HTTP.

Every check schemathesis has, positive and negative data, the examples,
coverage, fuzzing and stateful phases, a fixed seed. A failure is a contract
bug to fix in the service; the only exclusions are below, each with its reason.
"""

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from schemathesis.specs.openapi.formats import get_default_format_strategies

from tests.e2e.contract.conftest import signed_up
from tests.e2e.contract.fuzzing import FuzzResult, fuzz
from tests.e2e.report import Reliability

# Cases per operation and phase; FUZZ_EXAMPLES raises it for a deeper local run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SEED = int(os.environ.get("FUZZ_SEED", "20261126"))

# Statuses schemathesis' positive_data_acceptance check accepts for schema-valid requests.
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


@dataclass(frozen=True)
class Exclusion:
    """Where the fuzzing deliberately departs from schemathesis' defaults, and why.

    ``accepts`` is a status one check must accept on one operation, for a
    deliberate, documented behaviour; without it the exclusion narrows what is
    generated (see ``generation_adjustments``).
    """

    operation: str
    check: str
    accepts: str | None
    reason: str

    def __str__(self) -> str:
        what = f"{self.check} accepts {self.accepts}" if self.accepts else self.check
        return f"{what} on {self.operation}: {self.reason}"

    @property
    def label(self) -> str:
        what = f"+{self.accepts}" if self.accepts else self.check
        return f"{self.operation} {what}"


EXCLUSIONS: dict[str, list[Exclusion]] = {
    "auth": [
        Exclusion(
            "POST /v1/auth/register",
            "generated e-mail addresses avoid special-use domains",
            None,
            "schemathesis draws some addresses at .test; the service refuses special-use "
            "domains (RFC 6761), which can never receive mail, and its schema says so",
        ),
        Exclusion(
            "POST /v1/auth/token",
            "positive_data_acceptance",
            "400",
            "RFC 6749 §5.2: well-formed credentials or a refresh token the server never issued "
            "are 400 invalid_grant; generated values cannot be a real account's",
        ),
        Exclusion(
            "POST /v1/auth/password",
            "positive_data_acceptance",
            "400",
            "a wrong current password is a documented 400; generated values cannot be the "
            "account's password",
        ),
        Exclusion(
            "DELETE /v1/auth/me",
            "positive_data_acceptance",
            "400",
            "a wrong password is a documented 400; generated values cannot be the account's "
            "password",
        ),
        *(
            Exclusion(
                f"POST /v1/auth/{path}",
                "positive_data_acceptance",
                "400",
                "a link token is single-use, random and only ever mailed; one the server did not "
                "issue (or that is used or expired) is a documented 400",
            )
            for path in ("verify-email", "password-reset/confirm")
        ),
    ],
    "tasks": [
        Exclusion(
            "GET /v1/tasks",
            "positive_data_acceptance",
            "400",
            "`cursor` is an opaque signed token; one the server did not issue is a documented 400",
        ),
        *(
            Exclusion(
                f"{method} /v1/tasks/{{task_id}}",
                "positive_data_acceptance",
                "412",
                "If-Match is any string; one that does not name the task's current ETag fails "
                "the precondition (RFC 9110 §13.1.1), a documented 412",
            )
            for method in ("PUT", "PATCH", "DELETE")
        ),
        Exclusion(
            "POST /v1/tasks",
            "positive_data_acceptance",
            "422",
            "an Idempotency-Key reused with another body is a 422 (IETF idempotency-key draft "
            "§2.7) and generated keys repeat; PUT reads the same body schema and stays strict",
        ),
    ],
}


PEERS = ("alice", "bob")


def identities(auth_url: str, directory: Path) -> Path:
    """Two real accounts as a Web Fuzzing Commons auth document: requests go as alice, and
    object_level_authorization replays her reads as bob, who must not see her objects."""
    users = []
    for name in PEERS:
        account = signed_up(auth_url, f"{name}@example.com")
        header = {"name": "Authorization", "value": f"Bearer {account.access_token}"}
        users.append({"name": name, "fixedHeaders": [header]})
    path = directory / "identities.json"
    path.write_text(json.dumps({"auth": users}))
    return path


def schemathesis_config(base_url: str, identities: Path, service: str) -> dict[str, Any]:
    """The `schemathesis.toml` equivalent of `st run --checks all --mode all --seed ...`."""
    accepted: dict[str, list[str]] = {}
    for exclusion in EXCLUSIONS[service]:
        if exclusion.accepts is not None:
            assert exclusion.check == "positive_data_acceptance"
            statuses = accepted.setdefault(exclusion.operation, list(POSITIVE_ACCEPTED))
            statuses.append(exclusion.accepts)
    return {
        "seed": SEED,
        "base-url": base_url,
        "auth": {"wfc": {"path": str(identities), "user": PEERS[0], "peers": list(PEERS)}},
        "generation": {"mode": "all", "max-examples": EXAMPLES},
        "checks": {"enabled": True},
        "phases": {
            name: {"enabled": True} for name in ("examples", "coverage", "fuzzing", "stateful")
        },
        "operations": [
            {
                "include-name": operation,
                "checks": {"positive_data_acceptance": {"expected-statuses": statuses}},
            }
            for operation, statuses in accepted.items()
        ],
    }


@contextlib.contextmanager
def generation_adjustments() -> Iterator[None]:
    """E-mail addresses without special-use top-level domains, for this run only."""
    default = get_default_format_strategies()["email"]
    special_use = tuple(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)
    schemathesis.openapi.format("email", default.filter(lambda a: not a.endswith(special_use)))
    try:
        yield
    finally:
        schemathesis.openapi.format("email", default)


def report(reliability: Reliability, service: str, result: FuzzResult) -> None:
    phases = "+".join(f"{result.cases_by_phase[p]} {p}" for p in sorted(result.cases_by_phase))
    exclusions = ", ".join(e.label for e in EXCLUSIONS[service]) or "none"
    reliability.record(
        9,
        "API contract fuzzing (schemathesis)",
        f"{service}: {len(result.operations)} operations, {result.cases} cases ({phases}), "
        f"{len(result.checks)} checks, seed {SEED}, "
        f"{len(result.failures)} failures, {len(result.errors)} errors; "
        f"exclusions: {exclusions}",
        notes=[f"{service} exclusion: {e}" for e in EXCLUSIONS[service]],
    )


def assert_documented(schema_url: str, service: str) -> None:
    """Every status an exclusion accepts is one the operation's OpenAPI documents."""
    paths = httpx.get(schema_url).raise_for_status().json()["paths"]
    for exclusion in EXCLUSIONS[service]:
        if exclusion.accepts is not None:
            method, path = exclusion.operation.split(" ", 1)
            responses = paths[path][method.lower()]["responses"]
            assert exclusion.accepts in responses, f"{exclusion.label} is not documented"


def assert_clean(result: FuzzResult) -> None:
    assert not result.errors, "\n".join(result.errors)
    assert not result.failures, f"{len(result.failures)} failures:\n" + "\n".join(result.failures)


def test_auth_contract(
    auth_url: str, database_url: object, tmp_path: Path, reliability: Reliability
) -> None:
    config = schemathesis_config(auth_url, identities(auth_url, tmp_path), "auth")
    assert_documented(f"{auth_url}/v1/auth/openapi.json", "auth")
    with generation_adjustments():
        result = fuzz(f"{auth_url}/v1/auth/openapi.json", config)
    report(reliability, "auth", result)
    assert_clean(result)


def test_tasks_contract(
    auth_url: str, tasks_url: str, database_url: object, tmp_path: Path, reliability: Reliability
) -> None:
    config = schemathesis_config(tasks_url, identities(auth_url, tmp_path), "tasks")
    assert_documented(f"{tasks_url}/v1/tasks/openapi.json", "tasks")
    result = fuzz(f"{tasks_url}/v1/tasks/openapi.json", config)
    report(reliability, "tasks", result)
    assert_clean(result)
