"""A real Prometheus scrapes both running services and evaluates the rules and dashboards.

Traffic is driven through the services, a database outage forces 5xx answers,
and Prometheus's HTTP API must then tell exactly what happened.
"""

import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy.engine import URL

from taskstack.auth.keys import generate_signing_key
from taskstack.bench.processes import free_port
from tests.deploy.test_observability import (
    DASHBOARDS,
    GRAFANA_VARIABLE,
    RULE_FILES,
    dashboard_expressions,
)
from tests.support.auth import STRONG_PASSWORD, bearer, login, register
from tests.support.processes import service_process
from tests.support.tcp_proxy import tcp_proxy
from tests.support.tools import require

SCRAPE_SECONDS = 1


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def query(self, expression: str) -> list[dict[str, Any]]:
        answer = httpx.get(
            f"{self.base_url}/api/v1/query", params={"query": expression}, timeout=10
        )
        body = answer.json()
        assert body["status"] == "success", f"{expression}: {body}"
        return list(body["data"]["result"])

    def value(self, expression: str) -> float | None:
        result = self.query(expression)
        assert len(result) <= 1, f"{expression} gave several series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expression: str, expected: float, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while (current := self.value(expression)) != expected:
            assert time.monotonic() < deadline, f"{expression} is {current}, not {expected}"
            time.sleep(0.5)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    binary = require("prometheus")
    with ExitStack() as stack:

        def start(targets: dict[str, str]) -> Prometheus:
            # The rules as shipped, evaluated every second instead of every 30.
            rule_files = []
            for path in RULE_FILES:
                rules = yaml.safe_load(path.read_text())
                for group in rules["groups"]:
                    group["interval"] = f"{SCRAPE_SECONDS}s"
                copy = tmp_path / path.name
                copy.write_text(yaml.safe_dump(rules))
                rule_files.append(str(copy))
            config = {
                "global": {
                    "scrape_interval": f"{SCRAPE_SECONDS}s",
                    "evaluation_interval": f"{SCRAPE_SECONDS}s",
                },
                "rule_files": rule_files,
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": [target]}]}
                    for job, target in targets.items()
                ],
            }
            (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
            port = free_port()
            log = stack.enter_context((tmp_path / "prometheus.log").open("wb"))
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(process.wait, 15)
            stack.callback(process.terminate)
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    if httpx.get(f"{base_url}/-/ready", timeout=1).status_code == 200:
                        return Prometheus(base_url)
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "prometheus did not start"
                time.sleep(0.2)

        yield start


def test_prometheus_sees_what_the_services_did(
    migrated_database: URL, database_url: URL, prometheus_for: Any
) -> None:
    keys = Path(tempfile.mkdtemp(prefix="taskstack-keys-"))
    generate_signing_key(keys)
    with ExitStack() as stack:
        proxy = stack.enter_context(tcp_proxy(migrated_database))  # cut for the outage below
        common = {"ACCESS_LOG": "false", "DATABASE_POOL_TIMEOUT": "2"}
        auth = stack.enter_context(
            service_process(
                "taskstack.auth.main:create_app",
                {
                    **common,
                    "DATABASE_URL": migrated_database.render_as_string(hide_password=False),
                    "AUTH_SIGNING_KEYS_DIR": str(keys),
                    "AUTH_BCRYPT_COST": "4",
                },
            )
        )
        tasks = stack.enter_context(
            service_process(
                "taskstack.tasks.main:create_app",
                {
                    **common,
                    "DATABASE_URL": proxy.url.render_as_string(hide_password=False),
                    "JWKS_URL": f"{auth.base_url}/.well-known/jwks.json",
                },
                ready_path="/readyz",
            )
        )
        prometheus = prometheus_for(
            {
                "taskstack-auth": auth.base_url.removeprefix("http://"),
                "taskstack-tasks": tasks.base_url.removeprefix("http://"),
            }
        )
        auth_client = stack.enter_context(httpx.Client(base_url=auth.base_url, timeout=30))
        tasks_client = stack.enter_context(httpx.Client(base_url=tasks.base_url, timeout=30))

        # Prometheus counts an increase only between two scrapes of a series, so
        # the traffic comes in two rounds with scrapes in between.
        count = "sum(taskstack_http_request_duration_seconds_count{{{}}})"
        posts = count.format('job="taskstack-tasks",route="/v1/tasks",method="POST",status="201"')
        failed = count.format('job="taskstack-tasks",route="/v1/tasks",method="GET",status="503"')
        for i in range(3):
            assert register(auth_client, f"user{i}@example.com").status_code == 202
        access = [
            login(auth_client, f"user{i}@example.com").json()["access_token"] for i in range(3)
        ]

        def bad_login() -> None:
            wrong = login(auth_client, "user0@example.com", "wrong " + STRONG_PASSWORD)
            assert wrong.status_code == 400

        def create_tasks(how_many: int) -> None:
            for n in range(how_many):
                created = tasks_client.post(
                    "/v1/tasks", json={"title": f"task {n}"}, headers=bearer(access[n % 3])
                )
                assert created.status_code == 201

        def fail_reads(how_many: int) -> None:
            for _ in range(how_many):
                answer = tasks_client.get("/v1/tasks", headers=bearer(access[0]))
                assert answer.status_code == 503

        bad_login()
        create_tasks(5)
        for token in access:
            assert tasks_client.get("/v1/tasks", headers=bearer(token)).status_code == 200
        prometheus.wait_for(posts, 5)

        proxy.cut()  # the database goes away: tasks answers 503
        fail_reads(2)
        assert tasks_client.get("/readyz").status_code == 503
        prometheus.wait_for(failed, 2)
        fail_reads(2)
        prometheus.wait_for(
            'count(ALERTS{alertname="TaskstackDatabaseUnreachable",alertstate="pending",'
            'service="tasks"})',
            1,
        )
        proxy.restore()
        assert tasks_client.get("/readyz").status_code == 200
        bad_login()
        create_tasks(5)

        prometheus.wait_for(posts, 10)
        prometheus.wait_for(failed, 4)
        prometheus.wait_for(
            count.format('job="taskstack-tasks",route="/v1/tasks",method="GET",status="200"'), 3
        )
        prometheus.wait_for(
            count.format('job="taskstack-auth",route="/v1/auth/token",status="200"'), 3
        )
        prometheus.wait_for('sum(taskstack_auth_logins_total{result="success"})', 3)
        prometheus.wait_for('sum(taskstack_auth_logins_total{result="bad_credentials"})', 2)
        prometheus.wait_for("sum(taskstack_tasks_created_total)", 10)
        prometheus.wait_for('min(taskstack_ready{service="tasks",check="database"})', 1)
        assert prometheus.value('sum(up{job=~"taskstack-(auth|tasks)"})') == 2

        # The SLO rules see the forced errors on tasks (2 of the 7 requests that
        # changed a counter in between), and none on auth.
        prometheus.wait_for('count(taskstack:http_errors:ratio_rate5m{service="auth"} == 0)', 1)
        # Waited for, not read once: an evaluation may run between two scrapes and
        # see no requests yet in its window (0/0, NaN) on a busy machine.
        prometheus.wait_for(
            'count(taskstack:http_errors:ratio_rate5m{service="tasks"} > 0.1 < 0.6)', 1
        )

        rules = httpx.get(f"{prometheus.base_url}/api/v1/rules", timeout=10).json()["data"][
            "groups"
        ]
        unhealthy = [
            (r["name"], r.get("lastError"))
            for g in rules
            for r in g["rules"]
            if r["health"] != "ok"
        ]
        assert unhealthy == []

        for path in DASHBOARDS:
            for expression in dashboard_expressions(json.loads(path.read_text())):
                concrete = GRAFANA_VARIABLE.sub(
                    lambda m: "1m" if "interval" in m[0] else ".*", expression
                )
                prometheus.query(concrete)  # every panel's query runs
        panel = (
            "sum by (service, route) "
            '(rate(taskstack_http_request_duration_seconds_count{service=~".*"}[1m]))'
        )
        routes = {(r["metric"]["service"], r["metric"]["route"]) for r in prometheus.query(panel)}
        assert {("tasks", "/v1/tasks"), ("auth", "/v1/auth/token")} <= routes
