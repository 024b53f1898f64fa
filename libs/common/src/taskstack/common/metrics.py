"""Prometheus metrics of every service, and the /metrics endpoint.

Names follow Prometheus conventions (`promtool check metrics`); every label
has a bounded set of values: route templates, never raw paths; no user,
e-mail or task ids.
"""

import contextlib
import weakref
from collections.abc import Iterable
from typing import Protocol

from fastapi import APIRouter, Request, Response
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

# From a few milliseconds (a cached read) to 10 s (the slowest a client waits).
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
# Not the API: kept out of the request metrics (and of traces).
INFRASTRUCTURE_PATHS = frozenset({"/livez", "/readyz", "/metrics"})

BUILD_INFO = Gauge(
    "taskstack_build_info", "Always 1; the service and its version.", ["service", "version"]
)
HTTP_REQUEST_DURATION = Histogram(
    "taskstack_http_request_duration_seconds",
    "Time to answer an API request, by route template, method and status.",
    ["service", "route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "taskstack_http_requests_in_progress", "API requests being answered right now.", ["service"]
)
DB_POOL_WAIT = Histogram(
    "taskstack_db_pool_wait_seconds",
    "Time a request waited for a database connection.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)
DB_CONNECTION_ERRORS = Counter(
    "taskstack_db_connection_errors",
    "Database connections that failed or were lost.",
    ["service"],
)
DB_TRANSIENT_RETRIES = Counter(
    "taskstack_db_transient_retries",
    "Requests replayed after a transient database error.",
    ["service"],
)
# From half a millisecond to the longest queue deadline worth setting.
ADMISSION_WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05)
ADMISSION_ADMITTED = Counter(
    "taskstack_admission_admitted",
    "API requests admitted to work (health and /metrics are never counted).",
    ["service"],
)
ADMISSION_REFUSED = Counter(
    "taskstack_admission_refused",
    "API requests refused with a 503 before any work: queue_full, queue_timeout, connection_limit.",
    ["service", "reason"],
)
ADMISSION_QUEUE_WAIT = Histogram(
    "taskstack_admission_queue_wait_seconds",
    "Time an admitted request waited in the admission queue (those that waited).",
    ["service"],
    buckets=ADMISSION_WAIT_BUCKETS,
)
ADMISSION_LIMIT = Gauge(
    "taskstack_admission_limit", "API requests a process works on at once.", ["service"]
)
ADMISSION_RETRY_AFTER = Gauge(
    "taskstack_admission_retry_after_seconds",
    "The Retry-After that refusals carry now.",
    ["service"],
)
TOKEN_VERIFICATION_FAILURES = Counter(
    "taskstack_token_verification_failures",
    "Access tokens refused, by reason.",
    ["service", "reason"],
)


READY = Gauge(
    "taskstack_ready",
    "1 when the readiness check passed at the last /readyz probe, else 0.",
    ["service", "check"],
)
JWKS_REFRESHES = Counter(
    "taskstack_jwks_refreshes", "Fetches of the auth service's JWKS, by result.", ["result"]
)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class Pool(Protocol):
    service: str

    def pool_stats(self) -> dict[str, float]: ...


class _PoolCollector(Collector):
    """Reads each live connection pool at scrape time."""

    def __init__(self) -> None:
        self.databases: weakref.WeakSet[Pool] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        families = {
            "size": GaugeMetricFamily(
                "taskstack_db_pool_size", "Connections the pool keeps.", labels=["service"]
            ),
            "checked_out": GaugeMetricFamily(
                "taskstack_db_pool_checked_out",
                "Connections in use by requests.",
                labels=["service"],
            ),
            "overflow": GaugeMetricFamily(
                "taskstack_db_pool_overflow",
                "Connections open beyond the pool size.",
                labels=["service"],
            ),
            "limit": GaugeMetricFamily(
                "taskstack_db_pool_max_connections",
                "The most connections the pool may hold (size plus overflow).",
                labels=["service"],
            ),
        }
        totals: dict[str, dict[str, float]] = {}
        for database in list(self.databases):
            stats = database.pool_stats()
            summed = totals.setdefault(database.service, dict.fromkeys(families, 0.0))
            for name in families:
                summed[name] += stats[name]
        for service, summed in totals.items():
            for name, family in families.items():
                family.add_metric([service], summed[name])
        return families.values()


_POOLS = _PoolCollector()


def track_pool(pool: Pool) -> None:
    """Report ``pool`` in the pool metrics while it lives (the collector registers with the
    first pool, not when this module is imported)."""
    if not _POOLS.databases:
        with contextlib.suppress(ValueError):  # already registered by an earlier pool
            REGISTRY.register(_POOLS)
    _POOLS.databases.add(pool)


def metrics_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        # OpenMetrics (with exemplars) when the scraper asks for it.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(REGISTRY), media_type=content_type)

    return router
