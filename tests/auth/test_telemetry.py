"""The auth service's traces: delivered over OTLP/HTTP, free of secrets, never in the way."""

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.main import create_app
from tests.support.auth import STRONG_PASSWORD, auth_settings, bearer, login, refresh, register
from tests.support.otlp import OtlpReceiver
from tests.support.processes import service_process
from tests.support.servers import serve
from tests.support.tracing import recorded_spans

AUTH = "taskstack.auth.main:create_app"


def service_env(database: URL, keys_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": database.render_as_string(hide_password=False),
        "AUTH_SIGNING_KEYS_DIR": str(keys_dir),
        "AUTH_BCRYPT_COST": "4",
        "ACCESS_LOG": "false",
        **extra,
    }


def test_no_span_carries_a_password_or_a_token(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    exporter = recorded_spans()
    exporter.clear()
    app = create_app(auth_settings(migrated_database, keys_dir))
    with serve(app) as base_url, httpx.Client(base_url=base_url) as client:
        register(client, "ada@example.com")
        tokens = login(client, "ada@example.com").json()
        rotated = refresh(client, tokens["refresh_token"]).json()
        client.get("/v1/auth/me", headers=bearer(rotated["access_token"]))
        client.post(
            "/v1/auth/password",
            json={"current_password": STRONG_PASSWORD, "new_password": "a new passphrase ok"},
            headers=bearer(rotated["access_token"]),
        )
        client.post("/v1/auth/revoke", data={"token": rotated["refresh_token"]})
    spans = exporter.get_finished_spans()
    assert len(spans) > 20
    secrets = [
        STRONG_PASSWORD,
        "a new passphrase ok",
        tokens["access_token"],
        tokens["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
    ]
    recorded = " ".join(
        f"{span.name} {dict(span.attributes or {})} {[e.attributes for e in span.events]}"
        for span in spans
    )
    assert "/v1/auth/token" in recorded  # the flow really was traced
    leaked = [secret[:12] for secret in secrets if secret in recorded]
    assert leaked == []
    assert "authorization" not in recorded.lower()


@pytest.fixture
def receiver() -> Iterator[tuple[str, OtlpReceiver]]:
    collector = OtlpReceiver()
    with serve(collector.app()) as base_url:
        yield base_url, collector


def test_spans_reach_an_otlp_http_collector_with_their_resource(
    migrated_database: URL, database_url: URL, keys_dir: Path, receiver: tuple[str, OtlpReceiver]
) -> None:
    endpoint, collector = receiver
    env = service_env(
        migrated_database,
        keys_dir,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        POD_NAME="auth-7d9f-abcde",
        POD_NAMESPACE="taskstack",
    )
    with service_process(AUTH, env) as auth, httpx.Client(base_url=auth.base_url) as client:
        register(client, "ada@example.com")
        deadline = time.monotonic() + 15
        while not any(s.name == "POST /v1/auth/register" for s in collector.spans):
            assert time.monotonic() < deadline, "no span reached the collector"
            time.sleep(0.1)
    [server] = [s for s in collector.spans if s.name == "POST /v1/auth/register"]
    assert server.resource["service.name"] == "taskstack-auth"
    assert server.resource["service.version"] == "0.1.0"
    assert server.resource["k8s.pod.name"] == "auth-7d9f-abcde"
    assert server.resource["k8s.namespace.name"] == "taskstack"
    sql = [s for s in collector.spans if s.trace_id == server.trace_id and s is not server]
    assert sql, "the request's SQL spans share its trace"


def test_without_an_endpoint_nothing_is_traced_and_nothing_is_said(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    with service_process(AUTH, service_env(migrated_database, keys_dir)) as auth:
        median_latency(auth.base_url, rounds=20)
        log = auth.log()
    assert "otlp" not in log.lower() and "export" not in log.lower()


def black_hole() -> tuple[socket.socket, int]:
    """A TCP listener that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(100)
    return listener, listener.getsockname()[1]


def median_latency(base_url: str, rounds: int = 200) -> float:
    durations = []
    with httpx.Client(base_url=base_url) as client:
        for _ in range(rounds):
            started = time.perf_counter()
            assert client.get("/.well-known/jwks.json").status_code == 200
            durations.append(time.perf_counter() - started)
    return statistics.median(durations)


@pytest.mark.timing
def test_a_dead_collector_does_not_slow_requests(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    listener, port = black_hole()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def swallow() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    threading.Thread(target=swallow, daemon=True).start()
    try:
        plain = service_env(migrated_database, keys_dir)
        with service_process(AUTH, plain) as auth:
            baseline = median_latency(auth.base_url)
        dead = {
            **plain,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        }
        with service_process(AUTH, dead) as auth:
            with_dead_collector = median_latency(auth.base_url)
    finally:
        stop.set()
        listener.close()
        for connection in accepted:
            connection.close()
    ratio = with_dead_collector / baseline
    print(
        f"median latency: {baseline * 1000:.2f} ms, with a dead collector "
        f"{with_dead_collector * 1000:.2f} ms (x{ratio:.2f})"
    )
    assert accepted, "the exporter never tried the collector"
    assert ratio < 1.5
