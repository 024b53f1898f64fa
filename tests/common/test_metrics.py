"""/metrics: Prometheus text (or OpenMetrics), RED by route template, pool, bounded labels."""

import subprocess
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.tools import require


def scrape(client: httpx.Client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by label set."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def series(client: httpx.Client) -> int:
    return sum(len(by_labels) for by_labels in scrape(client).values())


def requests_counted(client: httpx.Client, **labels: str) -> float:
    counts = scrape(client).get("taskstack_http_request_duration_seconds_count", {})
    return sum(v for k, v in counts.items() if labels.items() <= dict(k).items())


def test_metrics_are_prometheus_text_and_labelled_by_route_template(demo: httpx.Client) -> None:
    before = requests_counted(demo, route="/v1/demo/items/{number}", status="200", service="demo")
    for number in range(3):
        assert demo.get(f"/v1/demo/items/{number}").status_code == 200
    response = demo.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    after = requests_counted(demo, route="/v1/demo/items/{number}", status="200", service="demo")
    assert after - before == 3
    samples = scrape(demo)
    assert samples["taskstack_build_info"][(("service", "demo"), ("version", "0.0.1"))] == 1
    for name in (
        "taskstack_db_pool_size",
        "taskstack_db_pool_checked_out",
        "taskstack_db_pool_overflow",
        "taskstack_db_pool_max_connections",
    ):
        assert (("service", "demo"),) in samples[name]
    assert samples["taskstack_db_pool_max_connections"][(("service", "demo"),)] >= 10
    assert "taskstack_db_pool_wait_seconds_count" in samples
    assert "process_resident_memory_bytes" in samples
    assert "python_info" in samples


def test_health_and_metrics_requests_are_not_counted(demo: httpx.Client) -> None:
    demo.get("/livez")
    demo.get("/readyz")
    demo.get("/metrics")
    counted = scrape(demo).get("taskstack_http_request_duration_seconds_count", {})
    assert not [
        labels for labels in counted if dict(labels)["route"] in ("/livez", "/readyz", "/metrics")
    ]


def test_openmetrics_when_the_scraper_asks(demo: httpx.Client) -> None:
    response = demo.get(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_cardinality_stays_bounded_whatever_the_paths(demo: httpx.Client) -> None:
    # Warm every label combination the loop below can produce.
    demo.get(f"/v1/demo/items/{uuid.uuid4().int}")
    demo.get(f"/nowhere/{uuid.uuid4()}")
    demo.request("BREW", "/v1/demo/items/1")
    demo.request("BREW", f"/{uuid.uuid4()}")
    before = series(demo)
    for _ in range(250):
        demo.get(f"/v1/demo/items/{uuid.uuid4().int}")  # 1,000 distinct ids and paths
        demo.get(f"/nowhere/{uuid.uuid4()}")
        demo.request("BREW", "/v1/demo/items/1")
        demo.request("BREW", f"/{uuid.uuid4()}")
    after = series(demo)
    assert after == before, f"{after - before} new series"
    text = demo.get("/metrics").text
    assert "/nowhere/" not in text
    assert "BREW" not in text


def test_promtool_finds_nothing_to_fix(demo: httpx.Client) -> None:
    promtool = require("promtool")
    demo.get("/v1/demo/items/1")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=demo.get("/metrics").text,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
