"""The auth service's traces: delivered over OTLP/HTTP, free of secrets, never in the way."""

import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy.engine import URL

from taskstack.auth.main import create_app
from tests.deploy import chart
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


def test_spans_reach_the_collector_on_the_port_the_chart_names_with_the_charts_resource(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    """auth run with the OTEL_* environment the chart gives its pods (Downward API values
    filled in as the kubelet would), exporting to a collector listening on the port the
    chart's example names: the collector's host name aside, nothing is adapted."""
    (values,) = [p for p in chart.CI_VALUES if p.stem == "monitoring-values"]
    rendering = chart.render_file(values)
    pod = chart.Pod(name="taskstack-auth-7d9f-abcde", namespace="taskstack-prod")
    environment = chart.container_environment(
        rendering, rendering.named("Deployment", "taskstack-auth"), pod
    )
    otel = {name: value for name, value in environment.items() if name.startswith("OTEL_")}
    named = urlsplit(otel["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert named.port == 4318
    # Any loopback address will do for the collector's name; a random one keeps the
    # well-known port clear of anything else on 127.0.0.1.
    host = "127." + ".".join(str(1 + octet % 254) for octet in os.urandom(3))
    otel["OTEL_EXPORTER_OTLP_ENDPOINT"] = named._replace(netloc=f"{host}:{named.port}").geturl()
    collector = OtlpReceiver()
    with serve(collector.app(), host=host, port=named.port):
        env = service_env(migrated_database, keys_dir, OTEL_BSP_SCHEDULE_DELAY="100", **otel)
        with service_process(AUTH, env) as auth, httpx.Client(base_url=auth.base_url) as client:
            register(client, "ada@example.com")
            deadline = time.monotonic() + 15
            while not any(s.name == "POST /v1/auth/register" for s in collector.spans):
                assert time.monotonic() < deadline, "no span reached the collector"
                time.sleep(0.1)
    [server] = [s for s in collector.spans if s.name == "POST /v1/auth/register"]
    assert {
        key: server.resource.get(key)
        for key in (
            "service.name",
            "service.namespace",
            "service.version",
            "deployment.environment.name",
            "k8s.pod.name",
            "k8s.namespace.name",
        )
    } == {
        "service.name": "taskstack-auth",
        "service.namespace": "taskstack",
        "service.version": "0.1.0",
        "deployment.environment.name": "development",
        "k8s.pod.name": "taskstack-auth-7d9f-abcde",
        "k8s.namespace.name": "taskstack-prod",
    }


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_callers_trace_id_reaches_the_logs_with_no_exporter(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    """No OTLP endpoint, so nothing is traced or exported: the log line of a request that
    came with a traceparent still carries its trace id, for correlation upstream."""
    env = service_env(migrated_database, keys_dir, ACCESS_LOG="true")
    with service_process(AUTH, env) as auth:
        answer = httpx.get(
            f"{auth.base_url}/.well-known/jwks.json",
            headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while (access := access_line(auth.log(), "/.well-known/jwks.json")) is None:
            assert time.monotonic() < deadline, auth.log()
            time.sleep(0.05)
    assert access["trace_id"] == TRACE_ID


def access_line(log: str, path: str) -> dict[str, object] | None:
    for line in log.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("message") == "request" and record.get("path") == path:
                return dict(record)
    return None


def test_without_an_endpoint_nothing_is_traced_and_nothing_is_said(
    migrated_database: URL, database_url: URL, keys_dir: Path
) -> None:
    with service_process(AUTH, service_env(migrated_database, keys_dir)) as auth:
        with httpx.Client(base_url=auth.base_url) as client:
            latencies([client], rounds=20)
        log = auth.log()
    assert "otlp" not in log.lower() and "export" not in log.lower()


def black_hole() -> tuple[socket.socket, int]:
    """A TCP listener that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(100)
    return listener, listener.getsockname()[1]


def latencies(clients: list[httpx.Client], rounds: int) -> list[list[float]]:
    """Request durations, the clients taking turns so that they share the machine's mood."""
    durations: list[list[float]] = [[] for _ in clients]
    for _ in range(rounds):
        for client, measured in zip(clients, durations, strict=True):
            started = time.perf_counter()
            assert client.get("/.well-known/jwks.json").status_code == 200
            measured.append(time.perf_counter() - started)
    return durations


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

    def traced_to(endpoint: str) -> dict[str, str]:
        return service_env(
            migrated_database,
            keys_dir,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_BSP_SCHEDULE_DELAY="50",
            OTEL_EXPORTER_OTLP_TIMEOUT="30",
        )

    # The same tracing work on both sides; only the collector differs.
    collector = OtlpReceiver()
    try:
        with (
            serve(collector.app()) as healthy,
            service_process(AUTH, traced_to(healthy)) as served,
            service_process(AUTH, traced_to(f"http://127.0.0.1:{port}")) as stranded,
            httpx.Client(base_url=served.base_url) as a,
            httpx.Client(base_url=stranded.base_url) as b,
        ):
            latencies([a, b], rounds=20)  # warm-up
            without, with_dead = latencies([a, b], rounds=300)
    finally:
        stop.set()
        listener.close()
        for connection in accepted:
            connection.close()
    ratio = statistics.median(d / w for w, d in zip(without, with_dead, strict=True))
    print(
        f"median latency: {statistics.median(without) * 1000:.2f} ms, with a dead collector "
        f"{statistics.median(with_dead) * 1000:.2f} ms (median paired ratio x{ratio:.2f})"
    )
    assert accepted, "the exporter never tried the dead collector"
    assert collector.spans, "the healthy collector received spans"
    assert ratio < 1.25
