"""The Helm chart: lint, schema, Kubernetes validation of every rendering, and the
properties users rely on. Rendered with Helm's own engine (no cluster, no binary)."""

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import helm_python
import kubernetes_validate
import pytest
import yaml

from taskstack.common.settings import verifies_server
from taskstack.dev.services import SERVICES as DEV_SERVICES
from tests.deploy import chart
from tests.deploy.chart import CHART, CI_VALUES, SERVICES, TILT_VALUES, Manifest, Rendering

VALUE_FILES: list[Path | None] = [None, *CI_VALUES, TILT_VALUES]
IDS = ["defaults", *(p.stem for p in CI_VALUES), "tilt"]
KUBERNETES_VERSIONS = [chart.OLDEST_KUBERNETES, kubernetes_validate.latest_version()]
# Custom resources: no schema ships with kubernetes-validate; checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}


@pytest.fixture(params=VALUE_FILES, ids=IDS)
def rendering(request: pytest.FixtureRequest) -> Rendering:
    path: Path | None = request.param
    return chart.render_file(path)


def label_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        if expression["operator"] == "In" and value not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and value in expression["values"]:
            return False
    return True


SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env"}


def hooks_of(container: dict[str, Any]) -> list[list[str]]:
    lifecycle = container.get("lifecycle", {})
    return [hook["exec"]["command"] for hook in lifecycle.values() if "exec" in hook]


def pod_labels(rendering: Rendering) -> list[dict[str, str]]:
    return [pod["metadata"]["labels"] for _, pod in rendering.workloads()]


# ---- lint, schema, Kubernetes validation


@pytest.mark.parametrize("values", VALUE_FILES, ids=IDS)
def test_helm_lint_is_clean(values: Path | None) -> None:
    report = helm_python.lint(CHART, chart.load_values(values) if values else None, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_kubernetes(rendering: Rendering, version: str) -> None:
    assert rendering.objects
    for manifest in rendering.objects:
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)


def test_custom_resources_have_their_required_shape(rendering: Rendering) -> None:
    for monitor in rendering.of_kind("ServiceMonitor"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    for rule in rendering.of_kind("PrometheusRule"):
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        assert rule["spec"]["groups"] and all(g["rules"] for g in rule["spec"]["groups"])
    for route in rendering.of_kind("HTTPRoute"):
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert route["spec"]["parentRefs"]


@pytest.mark.parametrize(
    "values",
    [
        {"ingres": {"enabled": True}},
        {"auth": {"replicaCont": 3}},
        {"ingress": {"tls": {"secretNme": "x"}}},
        {"networkPolicy": {"database": {"cidr": ["10.0.0.0/8"]}}},
        {"image": {"tag": "latest"}},
        {"tests": {"image": {"tag": "latest"}}},
        {"environment": "prod"},
        {"database": {"transactionPooler": "yes"}},
        {"auth": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
        {"securityContext": {"readOnlyRootFileSystem": True}},
        {"server": {"admissionLimit": 0}},
        {"server": {"admissionQueueLimit": -1}},
        {"server": {"admissionQueueTimeoutSeconds": -0.5}},
        {"server": {"retryAfterSeconds": 31}},
        {"server": {"maxConnections": 0}},
        {"server": {"keepAliveSeconds": 0}},
        {"server": {"admissionLimt": 8}},
        {"tasks": {"server": {"admissionLimit": 0}}},
        {"tasks": {"autoscaling": {"targetRequestsInProgress": 0}}},
        {"tasks": {"maxTasksPerUser": 0}},
        {"tasks": {"rateLimit": {"requestsPerMinute": 0}}},
        {"tasks": {"rateLimit": {"syncSeconds": 0}}},
        {"tasks": {"rateLimit": {"perMinute": 100}}},
    ],
)
def test_schema_rejects_typos_and_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.chart().validate_schema(values)
    with pytest.raises(helm_python.HelmError, match="schema"):
        chart.render(values)


def test_schema_accepts_every_values_file() -> None:
    for path in [CHART / "values.yaml", *CI_VALUES, TILT_VALUES]:
        chart.chart().validate_schema(chart.load_values(path))


def schema() -> dict[str, Any]:
    found = chart.chart().schema
    assert found is not None
    return found


def resolved(node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its local `$ref` (a `#/$defs/...` pointer) followed."""
    while "$ref" in node:
        pointer = node["$ref"].removeprefix("#/").split("/")
        node = schema()
        for part in pointer:
            node = node[part]
    return node


def test_both_services_share_one_definition_of_each_common_setting() -> None:
    auth, tasks = (schema()["properties"][s]["properties"] for s in SERVICES)
    common = auth.keys() & tasks.keys()
    assert {
        "image",
        "replicaCount",
        "resources",
        "autoscaling",
        "podDisruptionBudget",
        "existingSecret",
        "extraEnv",
        "podAnnotations",
        "nodeSelector",
        "tolerations",
        "affinity",
        "server",
    } <= common
    for key in common:
        assert auth[key] == tasks[key] == {"$ref": auth[key].get("$ref")}, key
    definitions = schema()["$defs"]
    used = set(re.findall(r'"#/\$defs/(\w+)"', json.dumps(schema())))
    assert used == definitions.keys()  # each reference resolves, each definition is used


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    ("block", "valid", "typo"),
    [
        ("image", {"repository": "x"}, "repo"),
        ("autoscaling", {"minReplicas": 3}, "minReplica"),
        ("resources", {"limits": {"cpu": "2"}}, "limit"),
        ("podDisruptionBudget", {"maxUnavailable": "50%"}, "maxUnavailble"),
        ("server", {"admissionLimit": 16}, "admissionLimt"),
    ],
)
def test_schema_rejects_unknown_keys_inside_shared_definitions(
    service: str, block: str, valid: dict[str, Any], typo: str
) -> None:
    chart.chart().validate_schema({service: {block: valid}})
    with pytest.raises(helm_python.HelmValuesError, match=f"'{typo}' not allowed"):
        chart.chart().validate_schema({service: {block: {typo: 1}}})


def test_every_values_key_is_commented() -> None:
    """Each key the schema names has a comment line just above it in values.yaml."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, dict[str, Any]]] = [(-1, schema())]
    missing = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if not stack:
            continue  # inside a free-form value
        properties = stack[-1][1].get("properties")
        if properties is None or key not in properties:
            continue
        previous = lines[number - 1].strip() if number else ""
        if not previous.startswith("#"):
            missing.append(f"{number + 1}: {line.strip()}")
        stack.append((indent, resolved(properties[key])))
    assert not missing, missing


# ---- workloads


def test_every_container_is_hardened_and_bounded(rendering: Rendering) -> None:
    for owner, pod in rendering.workloads():
        spec = pod["spec"]
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True
        assert int(security["runAsUser"]) > 0
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            where = f"{owner['kind']}/{owner['metadata']['name']}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["requests"]["memory"], where
            assert resources["limits"]["memory"], where
            for command in (container.get("command"), *hooks_of(container)):
                assert not command or command[0] not in SHELLS, where  # no shell at run time
            image = container["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), where
            assert not image.endswith(":latest"), where
            if context["readOnlyRootFilesystem"]:
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                if owner["kind"] != "Pod":  # curl, the test pods' image, writes nothing
                    volumes = {v["name"]: v for v in spec["volumes"]}
                    scratch = mounts["/tmp"]  # noqa: S108 (an emptyDir in the pod, not ours)
                    assert "emptyDir" in volumes[scratch], where


def test_read_only_root_filesystem_everywhere_but_tilt() -> None:
    for path in [None, *CI_VALUES]:
        for _, pod in chart.render_file(path).workloads():
            for container in pod["spec"]["containers"]:
                assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_containers_have_probes_on_health_endpoints(rendering: Rendering) -> None:
    for deployment in rendering.of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"] for p in container["ports"]}
        probes = {
            kind: container[f"{kind}Probe"]["httpGet"]
            for kind in ("startup", "readiness", "liveness")
        }
        assert probes["startup"]["path"] == "/livez"
        assert probes["liveness"]["path"] == "/livez"  # never the database
        assert probes["readiness"]["path"] == "/readyz"
        assert {p["port"] for p in probes.values()} <= ports
        startup = container["startupProbe"]
        config = rendering.named("ConfigMap", deployment["metadata"]["name"])["data"]
        # The process waits up to DATABASE_STARTUP_TIMEOUT for the database before it listens.
        window = startup["periodSeconds"] * startup["failureThreshold"]
        assert window > float(config["DATABASE_STARTUP_TIMEOUT"])
        assert "command" not in container and "args" not in container  # the image's CMD


def test_deployments_roll_safely(rendering: Rendering) -> None:
    deployments = rendering.of_kind("Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {chart.service_name(s) for s in SERVICES}
    for deployment in deployments:
        spec = deployment["spec"]
        template = spec["template"]
        assert label_match(spec["selector"], template["metadata"]["labels"])
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        annotations = template["metadata"]["annotations"]
        assert {"checksum/config", "checksum/secrets"} <= annotations.keys()
        spread = template["spec"].get("topologySpreadConstraints", [])
        if spread:
            assert {c["topologyKey"] for c in spread} == {
                "kubernetes.io/hostname",
                "topology.kubernetes.io/zone",
            }
            for constraint in spread:
                assert label_match(constraint["labelSelector"], template["metadata"]["labels"])


def test_a_config_change_rolls_the_pods() -> None:
    before = chart.render().named("Deployment", "taskstack-auth")
    after = chart.render({"logLevel": "DEBUG"}).named("Deployment", "taskstack-auth")
    key = "checksum/config"
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_topology_spread_is_on_by_default() -> None:
    for deployment in chart.render_file(None).of_kind("Deployment"):
        assert len(deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]) == 2


def test_services_select_pods_and_target_named_ports(rendering: Rendering) -> None:
    deployments = rendering.of_kind("Deployment")
    for service in rendering.of_kind("Service"):
        selected = [
            d
            for d in deployments
            if label_match(
                {"matchLabels": service["spec"]["selector"]},
                d["spec"]["template"]["metadata"]["labels"],
            )
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        container_ports = {
            p["name"]
            for c in selected[0]["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports


def test_autoscalers_and_budgets_target_what_exists(rendering: Rendering) -> None:
    deployments = {d["metadata"]["name"]: d for d in rendering.of_kind("Deployment")}
    scaled = set()
    for hpa in rendering.of_kind("HorizontalPodAutoscaler"):
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments
        metrics = hpa["spec"]["metrics"]
        resources = {m["resource"]["name"] for m in metrics if m["type"] == "Resource"}
        assert "cpu" in resources and resources <= {"cpu", "memory"}
        pods = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
        assert pods in ([], ["taskstack_http_requests_in_progress"])
        assert len(metrics) == len(resources) + len(pods)
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        scaled.add(target["name"])
    for name, deployment in deployments.items():
        # The autoscaler owns the replica count when there is one.
        assert ("replicas" in deployment["spec"]) == (name not in scaled)
    for pdb in rendering.of_kind("PodDisruptionBudget"):
        assert pdb["apiVersion"] == "policy/v1"
        assert [
            d
            for d in deployments.values()
            if label_match(pdb["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]


def test_autoscaling_can_include_memory() -> None:
    (values,) = [p for p in CI_VALUES if p.stem == "production-ingress-values"]
    hpa = chart.render_file(values).named("HorizontalPodAutoscaler", "taskstack-auth")
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_autoscaling_on_requests_in_progress_only_when_set() -> None:
    def pods_metrics(rendering: Rendering, service: str) -> list[dict[str, Any]]:
        hpa = rendering.named("HorizontalPodAutoscaler", chart.service_name(service))
        return [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]

    for service in SERVICES:
        assert pods_metrics(chart.render_file(None), service) == []
    (values,) = [p for p in CI_VALUES if p.stem == "monitoring-values"]
    rendering = chart.render_file(values)
    assert pods_metrics(rendering, "auth") == []
    assert pods_metrics(rendering, "tasks") == [
        {
            "metric": {"name": "taskstack_http_requests_in_progress"},
            "target": {"type": "AverageValue", "averageValue": "16"},
        }
    ]
    # The target is a quantity: a fraction of a request stays exact.
    fraction = chart.render({"auth": {"autoscaling": {"targetRequestsInProgress": 2.5}}})
    assert pods_metrics(fraction, "auth")[0]["target"]["averageValue"] == "2.5"


@pytest.mark.parametrize(
    "values",
    [
        {"tasks": {"autoscaling": {"targetRequestsInProgress": 32}}},
        {
            "auth": {
                "server": {"admissionLimit": 8},
                "autoscaling": {"targetRequestsInProgress": 10},
            }
        },
    ],
)
def test_a_requests_in_progress_target_must_be_below_the_admission_limit(
    values: dict[str, Any],
) -> None:
    # Admission bounds the requests in progress: a target at or above it is never reached.
    with pytest.raises(helm_python.HelmError, match="must be below the admission limit"):
        chart.render(values)


def test_service_accounts_mount_no_token(rendering: Rendering) -> None:
    accounts = {a["metadata"]["name"]: a for a in rendering.of_kind("ServiceAccount")}
    for account in accounts.values():
        assert account["automountServiceAccountToken"] is False
    for deployment in rendering.of_kind("Deployment"):
        name = deployment["spec"]["template"]["spec"].get("serviceAccountName")
        assert name is None or name in accounts


# ---- migrations


def test_migrations_are_hook_jobs_running_the_service_image(rendering: Rendering) -> None:
    jobs = rendering.of_kind("Job")
    values_enabled = bool(jobs)
    if not values_enabled:
        return
    deployments = {d["metadata"]["name"]: d for d in rendering.of_kind("Deployment")}
    assert {j["metadata"]["name"] for j in jobs} == {
        f"{chart.service_name(s)}-migrate" for s in SERVICES
    }
    for job in jobs:
        service = job["metadata"]["name"].removeprefix("taskstack-").removesuffix("-migrate")
        annotations = job["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        assert int(annotations["helm.sh/hook-weight"]) >= 0
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
        assert job["spec"]["backoffLimit"] >= 1
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert "serviceAccountName" not in pod  # the chart's accounts do not exist yet
        (container,) = pod["containers"]
        assert container["command"] == [f"taskstack-{service}-migrate"]
        (app,) = deployments[f"taskstack-{service}"]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == app["image"]
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["DATABASE_URL"]["valueFrom"]
        assert env["DATABASE_MIGRATION_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
        assert "configMapRef" not in str(container)  # the ConfigMap does not exist yet
    # What the Jobs read exists before them: a chart-made database Secret is an earlier hook.
    for secret in rendering.of_kind("Secret"):
        if secret["metadata"]["name"] == "taskstack-database":
            annotations = secret["metadata"]["annotations"]
            assert int(annotations["helm.sh/hook-weight"]) < 0
            assert "pre-install" in annotations["helm.sh/hook"]


def test_neon_migrations_use_the_direct_endpoint() -> None:
    (values,) = [p for p in CI_VALUES if p.stem == "neon-values"]
    rendering = chart.render_file(values)
    secret = rendering.named("Secret", "taskstack-database")["stringData"]
    assert "-pooler." in secret["DATABASE_URL"]
    assert "-pooler" not in secret["DATABASE_MIGRATION_URL"]
    # Both verify Neon's certificate and bind the login to the TLS channel: what a
    # production service and migration require of them.
    for variable in ("DATABASE_URL", "DATABASE_MIGRATION_URL"):
        query = dict(parse_qsl(urlsplit(secret[variable]).query))
        assert query == {
            "sslmode": "verify-full",
            "sslrootcert": "system",
            "channel_binding": "require",
        }
        assert verifies_server(secret[variable])
    for deployment in rendering.of_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert "DATABASE_MIGRATION_URL" not in {e["name"] for e in container["env"]}


def test_a_migration_job_fails_with_its_own_error_before_helm_gives_up() -> None:
    """A held lock or a refused URL fails the Job with the command's one line, in its logs and
    its termination message, within Helm's default 5-minute wait."""
    rendering = chart.render_file(None)
    for service in SERVICES:
        job = rendering.named("Job", f"{chart.service_name(service)}-migrate")["spec"]
        (container,) = job["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        lock_wait = float(env["DATABASE_MIGRATION_LOCK_TIMEOUT_SECONDS"])
        attempts = job["backoffLimit"] + 1
        assert attempts * lock_wait < job["activeDeadlineSeconds"] < 300
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert "DATABASE_TRUSTED_NETWORK" not in env  # verified TLS unless the values say so
    trusted = chart.render({"database": {"trustedNetwork": True}})
    for service in SERVICES:
        config = trusted.named("ConfigMap", chart.service_name(service))["data"]
        assert config["DATABASE_TRUSTED_NETWORK"] == "true"
    for job in trusted.of_kind("Job"):
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert {"name": "DATABASE_TRUSTED_NETWORK", "value": "true"} in container["env"]


def test_a_lock_wait_longer_than_the_job_deadline_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match="lockTimeoutSeconds"):
        chart.render({"migrations": {"lockTimeoutSeconds": 200, "activeDeadlineSeconds": 240}})


# ---- configuration and secrets


def test_configuration_reaches_each_service(rendering: Rendering) -> None:
    for service in SERVICES:
        deployment = rendering.named("Deployment", chart.service_name(service))
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (source,) = container["envFrom"]
        config = rendering.named("ConfigMap", source["configMapRef"]["name"])["data"]
        env = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        downward = {
            e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
            for e in container["env"]
            if "fieldRef" in e.get("valueFrom", {})
        }
        assert downward == {
            "POD_NAME": "metadata.name",
            "POD_NAMESPACE": "metadata.namespace",
            "NODE_NAME": "spec.nodeName",
        }
        assert {"ENVIRONMENT", "FORWARDED_ALLOW_IPS", "DATABASE_POOL_SIZE"} <= config.keys()
        assert all(isinstance(v, str) for v in config.values())
        assert "DATABASE_URL" in env
        if service == "auth":
            assert "AUTH_PASSWORD_PEPPER" in env
            assert config["AUTH_SIGNING_KEYS_DIR"] == "/etc/taskstack/signing-keys"
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            mount = mounts[config["AUTH_SIGNING_KEYS_DIR"]]
            assert mount["readOnly"] is True
            volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
            keys_secret = volumes[mount["name"]]["secret"]["secretName"]
            made = {s["metadata"]["name"]: s for s in rendering.of_kind("Secret")}
            if keys_secret in made:  # created from values: it holds the signing kid
                data = {
                    **made[keys_secret].get("data", {}),
                    **made[keys_secret].get("stringData", {}),
                }
                assert f"{config['AUTH_SIGNING_KEY_ID']}.pem" in data
        else:
            assert "TASKS_CURSOR_SECRET" in env
            assert config["JWKS_URL"].endswith("/.well-known/jwks.json")


SERVER_ENV = {
    "ADMISSION_LIMIT": "32",
    "ADMISSION_QUEUE_LIMIT": "32",
    "ADMISSION_QUEUE_TIMEOUT_SECONDS": "0.01",
    "ADMISSION_RETRY_AFTER_SECONDS": "1",
    "UVICORN_LIMIT_CONCURRENCY": "4096",
    "UVICORN_BACKLOG": "2048",
    "UVICORN_TIMEOUT_KEEP_ALIVE": "65",
}


def test_server_settings_reach_each_service_and_not_the_migrations() -> None:
    rendering = chart.render_file(None)
    for service in SERVICES:
        config = rendering.named("ConfigMap", chart.service_name(service))["data"]
        assert {k: config[k] for k in SERVER_ENV} == SERVER_ENV
        job = rendering.named("Job", f"{chart.service_name(service)}-migrate")
        (container,) = job["spec"]["template"]["spec"]["containers"]
        names = {e["name"] for e in container["env"]}
        assert "DATABASE_URL" in names and not names & SERVER_ENV.keys()


def test_a_service_overrides_server_settings_key_by_key() -> None:
    rendering = chart.render(
        {
            "server": {"admissionQueueTimeoutSeconds": 0.25, "keepAliveSeconds": 620},
            "auth": {"server": {"admissionLimit": 8, "admissionQueueLimit": 0}},
        }
    )
    auth = rendering.named("ConfigMap", "taskstack-auth")["data"]
    tasks = rendering.named("ConfigMap", "taskstack-tasks")["data"]
    assert auth["ADMISSION_LIMIT"] == "8" and tasks["ADMISSION_LIMIT"] == "32"
    assert auth["ADMISSION_QUEUE_LIMIT"] == "0"  # a 0 of the service's own is kept
    assert tasks["ADMISSION_QUEUE_LIMIT"] == "32"
    for config in (auth, tasks):
        assert config["ADMISSION_QUEUE_TIMEOUT_SECONDS"] == "0.25"
        assert config["UVICORN_TIMEOUT_KEEP_ALIVE"] == "620"
        assert config["UVICORN_LIMIT_CONCURRENCY"] == "4096"


def test_keep_alive_outlasts_the_ingress_idle_timeout() -> None:
    """ingress-nginx keeps idle upstream connections 60 s (upstream-keepalive-timeout): the
    services must not close one first, or the request nginx sends on it fails with a 502."""
    for path in VALUE_FILES:
        for config in chart.render_file(path).of_kind("ConfigMap"):
            if "UVICORN_TIMEOUT_KEEP_ALIVE" in config["data"]:
                assert int(config["data"]["UVICORN_TIMEOUT_KEEP_ALIVE"]) > 60


def test_trace_export_targets_the_otlp_http_port() -> None:
    """The services export spans over OTLP/HTTP (http/protobuf) only: an endpoint on gRPC's
    port 4317 would export nothing. The CI value set and the values.yaml example use 4318."""
    (values,) = [p for p in CI_VALUES if p.stem == "monitoring-values"]
    endpoints = {
        config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        for config in chart.render_file(values).of_kind("ConfigMap")
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in config.get("data", {})
    }
    assert endpoints and {urlsplit(e).port for e in endpoints} == {4318}
    text = (CHART / "values.yaml").read_text()
    telemetry = text[text.index("\ntelemetry:\n") :].split("\n\n", 1)[0]
    assert re.findall(r"https?://[\w.-]+:(\d+)", telemetry) == ["4318"]


def test_existing_secrets_are_referenced_and_none_is_created() -> None:
    (values,) = [p for p in CI_VALUES if p.stem == "production-ingress-values"]
    rendering = chart.render_file(values)
    assert rendering.of_kind("Secret") == []
    auth = rendering.named("Deployment", "taskstack-auth")["spec"]["template"]["spec"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in auth["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {"DATABASE_URL": "taskstack-database", "AUTH_PASSWORD_PEPPER": "taskstack-auth"}
    volumes = {v["name"]: v for v in auth["volumes"]}
    assert volumes["signing-keys"]["secret"]["secretName"] == "taskstack-signing-keys"
    config = rendering.named("ConfigMap", "taskstack-auth")["data"]
    assert config["AUTH_SIGNING_KEY_ID"] == "2026-11"
    assert config["TOKEN_ISSUER"] == "https://tasks.example.com"
    assert config["ENVIRONMENT"] == "production"
    assert "DEVELOPMENT SECRETS" not in rendering.notes


def test_production_refuses_secrets_from_values() -> None:
    with pytest.raises(helm_python.HelmError, match="existing Secrets"):
        chart.render({"environment": "production", "database": {"url": "postgresql://x@y/z"}})


def test_existing_signing_keys_need_a_key_id() -> None:
    with pytest.raises(helm_python.HelmError, match="keyId is required"):
        chart.render({"auth": {"signingKeys": {"existingSecret": "keys"}}})


def test_development_secrets_are_announced_loudly() -> None:
    notes = chart.render_file(None).notes
    assert "WARNING: DEVELOPMENT SECRETS" in notes
    generated = chart.render_file(None).named("Secret", "taskstack-auth")["stringData"]
    assert generated["AUTH_PASSWORD_PEPPER"].startswith("insecure-development-")


def test_notes_tell_the_url_and_how_to_get_a_token() -> None:
    (values,) = [p for p in CI_VALUES if p.stem == "production-ingress-values"]
    notes = chart.render_file(values).notes
    assert "https://tasks.example.com" in notes
    assert "/v1/auth/token" in notes and "grant_type=password" in notes
    assert "Authorization: Bearer" in notes


# ---- routing


def routes_of(rendering: Rendering) -> dict[str, str]:
    routes: dict[str, str] = {}
    for ingress in rendering.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["pathType"] == "Prefix"
                backend = path["backend"]["service"]
                routes[path["path"]] = backend["name"]
                assert backend["port"] == {"name": "http"}
    for route in rendering.of_kind("HTTPRoute"):
        for rule in route["spec"]["rules"]:
            ((match,), (backend,)) = rule["matches"], rule["backendRefs"]
            assert match["path"]["type"] == "PathPrefix"
            routes[match["path"]["value"]] = backend["name"]
    return routes


@pytest.mark.parametrize("stem", ["production-ingress-values", "httproute-values"])
def test_gateway_routes_exactly_the_public_prefixes(stem: str) -> None:
    (values,) = [p for p in CI_VALUES if p.stem == stem]
    rendering = chart.render_file(values)
    expected = {prefix: f"taskstack-{s.name}" for s in DEV_SERVICES for prefix in s.prefixes}
    assert expected == {
        "/v1/auth": "taskstack-auth",
        "/.well-known": "taskstack-auth",
        "/v1/tasks": "taskstack-tasks",
    }
    assert routes_of(rendering) == expected  # the same routes as `taskstack up`'s gateway
    services = {s["metadata"]["name"] for s in rendering.of_kind("Service")}
    assert set(expected.values()) <= services


def test_ingress_tls_and_rate_limit() -> None:
    (values,) = [p for p in CI_VALUES if p.stem == "production-ingress-values"]
    (ingress,) = chart.render_file(values).of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["tasks.example.com"], "secretName": "tasks-example-com-tls"}
    ]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/limit-rps"] == "10"
    assert annotations["nginx.ingress.kubernetes.io/limit-burst-multiplier"] == "3"
    assert annotations["nginx.ingress.kubernetes.io/limit-connections"] == "10"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"


def test_the_per_user_limits_reach_tasks_and_not_its_migrations() -> None:
    limits = {
        "TASKS_MAX_TASKS_PER_USER": "100000",
        "TASKS_RATE_LIMIT_PER_MINUTE": "1200",
        "TASKS_RATE_LIMIT_SYNC_SECONDS": "1",
    }
    rendering = chart.render_file(None)
    config = rendering.named("ConfigMap", chart.service_name("tasks"))["data"]
    assert {k: config[k] for k in limits} == limits
    auth = rendering.named("ConfigMap", chart.service_name("auth"))["data"]
    assert not auth.keys() & limits.keys()
    set_here = chart.render(
        {
            "tasks": {
                "maxTasksPerUser": 10,
                "rateLimit": {"requestsPerMinute": 60, "syncSeconds": 0.5},
            }
        }
    )
    config = set_here.named("ConfigMap", chart.service_name("tasks"))["data"]
    assert {k: config[k] for k in limits} == {
        "TASKS_MAX_TASKS_PER_USER": "10",
        "TASKS_RATE_LIMIT_PER_MINUTE": "60",
        "TASKS_RATE_LIMIT_SYNC_SECONDS": "0.5",
    }


def test_the_ingress_example_names_the_controller_settings_for_429_and_hsts() -> None:
    """ingress-nginx reads these from its own ConfigMap, not from Ingress annotations: the
    example and the values say so with the exact keys (docs/operations.md too)."""
    (values,) = [p for p in CI_VALUES if p.stem == "production-ingress-values"]
    for text in (values.read_text(), (CHART / "values.yaml").read_text()):
        for setting in (
            'limit-req-status-code: "429"',
            'limit-conn-status-code: "429"',
            'hsts: "true"',
            'hsts-max-age: "31536000"',
        ):
            assert setting in text


def test_rate_limit_can_be_turned_off() -> None:
    rendering = chart.render({"ingress": {"enabled": True, "rateLimit": {"enabled": False}}})
    (ingress,) = rendering.of_kind("Ingress")
    assert not any("limit" in k for k in ingress["metadata"].get("annotations", {}))


# ---- network policies


def policies(rendering: Rendering) -> list[Manifest]:
    return rendering.of_kind("NetworkPolicy")


def test_network_policies_select_the_release_pods(rendering: Rendering) -> None:
    if not policies(rendering):
        return
    pods = pod_labels(rendering)
    deny = rendering.named("NetworkPolicy", "taskstack-default-deny")["spec"]
    assert (
        deny["policyTypes"] == ["Ingress", "Egress"]
        and "ingress" not in deny
        and "egress" not in deny
    )
    for labels in pods:
        assert label_match(deny["podSelector"], labels)  # every pod of the release is covered
    for policy in policies(rendering):
        assert [p for p in pods if label_match(policy["spec"]["podSelector"], p)], policy[
            "metadata"
        ]["name"]
    for labels in pods:  # and each one is let out to DNS
        allowed = [p for p in policies(rendering) if label_match(p["spec"]["podSelector"], labels)]
        ports = {
            (port["port"], port["protocol"])
            for p in allowed
            for rule in p["spec"].get("egress", [])
            for port in rule.get("ports", [])
        }
        assert {(53, "UDP"), (53, "TCP")} <= ports, labels


def ingress_rules(rendering: Rendering, service: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = rendering.named("NetworkPolicy", chart.service_name(service))[
        "spec"
    ]["ingress"]
    return rules


def test_services_accept_only_the_ingress_controller_tasks_tests_and_monitoring() -> None:
    rendering = chart.render_file(None)
    for service in SERVICES:
        sources = []
        for rule in ingress_rules(rendering, service):
            assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
            (peer,) = rule["from"]
            if "namespaceSelector" in peer:
                sources.append(
                    peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                )
            else:
                sources.append(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"])
        expected = [
            "ingress-nginx",
            "test",
            *(["tasks"] if service == "auth" else []),
            "monitoring",
        ]
        assert sources == expected
    tasks_egress = rendering.named("NetworkPolicy", "taskstack-tasks")["spec"]["egress"]
    (to_auth,) = [r for r in tasks_egress if r["ports"] == [{"port": "http", "protocol": "TCP"}]]
    assert to_auth["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "auth"


def test_egress_is_dns_database_and_collector_only() -> None:
    """And the collector on OTLP/HTTP's port only: the services send nothing to gRPC's."""
    (values,) = [p for p in CI_VALUES if p.stem == "monitoring-values"]
    rendering = chart.render_file(values)
    for policy in policies(rendering):
        for rule in policy["spec"].get("egress", []):
            ports = {p["port"] for p in rule["ports"]}
            assert ports in ({53}, {5432}, {4318}, {"http"}), (
                policy["metadata"]["name"],
                rule,
            )
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    assert ports == {5432}  # only the (external) database by address


def test_in_cluster_database_by_labels() -> None:
    rendering = chart.render_file(TILT_VALUES)
    egress = rendering.named("NetworkPolicy", "taskstack-migrate")["spec"]["egress"]
    (database,) = [r for r in egress if r["ports"] == [{"port": 5432, "protocol": "TCP"}]]
    assert database["to"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "taskstack-postgres"}}}
    ]


# ---- helm test


def test_helm_test_pods_call_readyz_through_the_services() -> None:
    rendering = chart.render_file(None)
    pods = rendering.of_kind("Pod")
    assert len(pods) == len(SERVICES)
    services = {s["metadata"]["name"]: s for s in rendering.of_kind("Service")}
    for pod in pods:
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        (container,) = pod["spec"]["containers"]
        _, tag = container["image"].rsplit(":", 1)
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag)  # pinned
        url = container["command"][-1]
        match = re.fullmatch(r"http://([\w-]+):(\d+)/readyz", url)
        assert match and match[1] in services
        assert int(match[2]) == services[match[1]]["spec"]["ports"][0]["port"]
    assert chart.render_file(TILT_VALUES).of_kind("Pod") == []


def test_chart_metadata_matches_the_services() -> None:
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert metadata["apiVersion"] == "v2"
    assert metadata["kubeVersion"] == ">=1.29.0-0"
    for service in SERVICES:
        project = tomllib.loads((chart.ROOT / f"services/{service}/pyproject.toml").read_text())
        assert metadata["appVersion"] == project["project"]["version"]  # the image tag


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_the_documented_install_example_works() -> None:
    """The deployment guide's `helm install ... --set ...` for Neon renders valid objects."""
    guide = (chart.ROOT / "docs" / "deployment" / "index.md").read_text()
    (block,) = [
        b for b in guide.split("```") if "helm install taskstack deploy/helm/taskstack" in b
    ]
    command = block[block.index("helm install") :].split("\n\n")[0]
    sets = re.findall(r"--set (\S+)", command)
    assert sets
    values: dict[str, Any] = {}
    for expression in sets:
        values = deep_merge(values, helm_python.parse_set_string(expression))
    rendering = chart.render(values)
    for manifest in rendering.objects:
        kubernetes_validate.validate(manifest, chart.OLDEST_KUBERNETES, strict=True)
    assert rendering.of_kind("Secret") == []  # every secret comes from an existing Secret
    (ingress,) = rendering.of_kind("Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "api.example.com"
    config = rendering.named("ConfigMap", "taskstack-auth")["data"]
    assert config["ENVIRONMENT"] == "production"
    assert config["TOKEN_ISSUER"] == "https://api.example.com"
    # The Secrets the guide creates are the ones the release reads, under the same keys.
    created = set(re.findall(r"create secret generic (\S+)", block))
    referenced = set()
    for _, pod in rendering.workloads():
        for container in pod["spec"]["containers"]:
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    ref = env["valueFrom"]["secretKeyRef"]
                    referenced.add(ref["name"])
                    assert ref["key"] in block, ref
        for volume in pod["spec"].get("volumes", []):
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
    assert created == referenced
    assert "-pooler" in block
    # Both URLs verify the server: what the release, in production, requires of them.
    urls = re.findall(r"DATABASE_(?:MIGRATION_)?URL='([^']+)'", block)
    assert len(urls) == 2 and all(verifies_server(url) for url in urls)
    assert all("channel_binding=require" in url for url in urls)
