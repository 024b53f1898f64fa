"""What a production install relies on beyond valid objects: sizing from the CPU limit,
trace export and its resource, egress a real cluster needs, pinned images, pods that
follow their signing keys, alerts that link their runbooks, and values refused before
they can hurt."""

import re
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from taskstack.auth.config import AuthSettings
from taskstack.common.cpu import usable_cpus
from tests.deploy import chart
from tests.deploy.chart import CI_VALUES, SERVICES, Manifest, Pod, Rendering

ROOT = chart.ROOT
RULES = ROOT / "deploy/observability/rules/taskstack.yaml"
DIGEST = "sha256:" + "0123456789abcdef" * 4
NODE_LOCAL_DNS = "169.254.20.10/32"
SMTP = {
    "to": [{"ipBlock": {"cidr": "203.0.113.25/32"}}],
    "ports": [{"port": 587, "protocol": "TCP"}],
}


def valid(rendering: Rendering) -> Rendering:
    for manifest in rendering.objects:
        if manifest["kind"] not in {"ServiceMonitor", "PrometheusRule", "HTTPRoute"}:
            kubernetes_validate.validate(manifest, chart.OLDEST_KUBERNETES, strict=True)
    return rendering


def deployment(rendering: Rendering, service: str) -> Manifest:
    return rendering.named("Deployment", chart.service_name(service))


def pod_annotations(rendering: Rendering, service: str) -> dict[str, str]:
    annotations: dict[str, str] = deployment(rendering, service)["spec"]["template"]["metadata"][
        "annotations"
    ]
    return annotations


# ---- item: hashing follows the CPU limit


@pytest.mark.parametrize(("limit", "millicores", "threads"), [("1", 1000, 1), ("2500m", 2500, 3)])
def test_auth_learns_its_cpu_limit_from_the_downward_api(
    limit: str, millicores: int, threads: int, tmp_path: Path
) -> None:
    """limits.cpu reaches auth in millicores (resourceFieldRef), and sizes its hashing."""
    rendering = valid(chart.render({"auth": {"resources": {"limits": {"cpu": limit}}}}))
    env = deployment(rendering, "auth")["spec"]["template"]["spec"]["containers"][0]["env"]
    (variable,) = [e for e in env if e["name"] == "AUTH_CPU_LIMIT_MILLICORES"]
    assert variable["valueFrom"] == {
        "resourceFieldRef": {"containerName": "auth", "resource": "limits.cpu", "divisor": "1m"}
    }
    environment = chart.container_environment(rendering, deployment(rendering, "auth"))
    assert environment["AUTH_CPU_LIMIT_MILLICORES"] == str(millicores)
    settings = AuthSettings.model_validate(
        {
            "database_url": "postgres://u@h/db",
            "auth_signing_keys_dir": tmp_path,
            "auth_cpu_limit_millicores": environment["AUTH_CPU_LIMIT_MILLICORES"],
        }
    )
    assert settings.auth_hash_concurrency == min(threads, usable_cpus())
    tasks_env = deployment(rendering, "tasks")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "AUTH_CPU_LIMIT_MILLICORES" not in {e["name"] for e in tasks_env}


# ---- item: OTLP over HTTP, with the resource an SRE filters by


def test_trace_export_says_http_protobuf_and_names_the_pod_in_its_resource() -> None:
    (values,) = [p for p in CI_VALUES if p.stem == "monitoring-values"]
    rendering = chart.render_file(values)
    for service in SERVICES:
        pod = Pod(name=f"taskstack-{service}-5d8-x2", namespace="prod-eu")
        environment = chart.container_environment(rendering, deployment(rendering, service), pod)
        assert environment["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith(":4318")
        attributes = dict(
            pair.split("=", 1) for pair in environment["OTEL_RESOURCE_ATTRIBUTES"].split(",")
        )
        assert attributes == {
            "service.namespace": "taskstack",
            "service.version": "0.1.0",
            "deployment.environment.name": "development",
            "k8s.pod.name": pod.name,
            "k8s.namespace.name": "prod-eu",
        }


def test_resource_attributes_can_be_added_and_overridden() -> None:
    rendering = chart.render(
        {
            "telemetry": {
                "otlpEndpoint": "http://collector:4318",
                "resourceAttributes": {"deployment.environment.name": "staging", "team": "core"},
            },
            "tasks": {"image": {"tag": "0.2.0"}},
        }
    )
    environment = chart.container_environment(rendering, deployment(rendering, "tasks"))
    attributes = dict(p.split("=", 1) for p in environment["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["team"] == "core"
    assert attributes["service.version"] == "0.2.0"  # the version that runs


def test_no_endpoint_no_otel_resource() -> None:
    environment = chart.container_environment(
        chart.render_file(None), deployment(chart.render_file(None), "auth")
    )
    assert not [name for name in environment if name.startswith("OTEL_")]


# ---- item: egress a real cluster needs


def egress(rendering: Rendering, policy: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = rendering.named("NetworkPolicy", policy)["spec"]["egress"]
    return rules


def test_node_local_dns_cache_is_reachable_from_every_pod_of_the_release() -> None:
    rendering = valid(
        chart.render({"networkPolicy": {"dns": {"nodeLocalCache": {"enabled": True}}}})
    )
    policies = [p["metadata"]["name"] for p in rendering.of_kind("NetworkPolicy")]
    with_egress = [name for name in policies if not name.endswith("default-deny")]
    assert len(with_egress) == 4  # both services, the migration Jobs, the test pods
    for name in with_egress:
        cache = [
            rule
            for rule in egress(rendering, name)
            if rule["to"] == [{"ipBlock": {"cidr": NODE_LOCAL_DNS}}]
        ]
        assert [rule["ports"] for rule in cache] == [
            [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        ], name
    plain = chart.render_file(None)
    assert NODE_LOCAL_DNS not in str(plain.of_kind("NetworkPolicy"))


def test_extra_egress_reaches_both_services_and_nothing_else() -> None:
    rendering = valid(chart.render({"networkPolicy": {"extraEgress": [SMTP]}}))
    for service in SERVICES:
        assert egress(rendering, chart.service_name(service))[-1] == SMTP
    assert SMTP not in egress(rendering, "taskstack-migrate")


def test_extra_egress_rules_are_checked() -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.chart().validate_schema({"networkPolicy": {"extraEgress": [{"too": []}]}})


# ---- item: one digest per service


def test_each_service_pins_its_own_image_digest() -> None:
    rendering = valid(chart.render({"auth": {"image": {"digest": DIGEST}}}))
    images = {
        owner["metadata"]["name"]: pod["spec"]["containers"][0]["image"]
        for owner, pod in rendering.workloads()
        if owner["kind"] != "Pod"
    }
    assert images["taskstack-auth"] == f"ghcr.io/taskstack/taskstack-auth:0.1.0@{DIGEST}"
    assert images["taskstack-auth-migrate"] == images["taskstack-auth"]
    assert images["taskstack-tasks"] == "ghcr.io/taskstack/taskstack-tasks:0.1.0"
    tagged = chart.render({"image": {"tag": "0.3.0"}, "tasks": {"image": {"tag": "0.3.1"}}})
    assert deployment(tagged, "auth")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ].endswith(":0.3.0")
    assert deployment(tagged, "tasks")["spec"]["template"]["spec"]["containers"][0][
        "image"
    ].endswith(":0.3.1")


@pytest.mark.parametrize("digest", ["sha256:abc", "latest", DIGEST.upper()])
def test_a_malformed_digest_is_refused(digest: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match="digest"):
        chart.chart().validate_schema({"tasks": {"image": {"digest": digest}}})


# ---- item: new signing keys roll auth's pods


def new_key() -> str:
    """A throw-away P-256 private key in PEM: none is committed."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


def test_a_signing_key_change_rolls_auth_and_only_auth() -> None:
    first = new_key()
    one = chart.render({"auth": {"signingKeys": {"keys": {"k1": first}}}})
    two = chart.render({"auth": {"signingKeys": {"keys": {"k1": first, "k2": new_key()}}}})
    assert (
        pod_annotations(one, "auth")["checksum/signing-keys"]
        != pod_annotations(two, "auth")["checksum/signing-keys"]
    )
    tasks_templates = [deployment(r, "tasks")["spec"]["template"] for r in (one, two)]
    assert tasks_templates[0] == tasks_templates[1]  # tasks holds no signing key


def test_an_existing_signing_key_secret_can_be_watched_by_reloader() -> None:
    values = {"auth": {"signingKeys": {"existingSecret": "signing", "keyId": "k1"}}}
    plain = chart.render(values)
    assert "annotations" not in deployment(plain, "auth")["metadata"]
    watched = valid(
        chart.render(
            {"auth": {"signingKeys": {**values["auth"]["signingKeys"], "reloadOnChange": True}}}
        )
    )
    assert deployment(watched, "auth")["metadata"]["annotations"] == {
        "secret.reloader.stakater.com/reload": "signing"
    }
    assert "annotations" not in deployment(watched, "tasks")["metadata"]


# ---- item: alerts link their runbooks


def repository_url() -> str:
    """The repository the images name as their source (the Dockerfile's SOURCE)."""
    match = re.search(r"^ARG SOURCE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match
    return match[1]


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_links_its_runbook_in_the_repository() -> None:
    found = alerts(yaml.safe_load(RULES.read_text())["groups"])
    assert found
    page = f"{repository_url()}/blob/main/docs/operations.md"
    for alert in found:
        assert alert["annotations"]["runbook_url"] == f"{page}#{alert['alert'].lower()}"


def test_the_chart_can_point_runbooks_at_your_own_copy() -> None:
    packaged = chart.render({"metrics": {"prometheusRule": {"enabled": True}}})
    (as_is,) = packaged.of_kind("PrometheusRule")
    assert alerts(as_is["spec"]["groups"]) == alerts(yaml.safe_load(RULES.read_text())["groups"])
    wiki = {"enabled": True, "runbookUrl": "https://wiki.example.com/taskstack/ops"}
    (rule,) = chart.render({"metrics": {"prometheusRule": wiki}}).of_kind("PrometheusRule")
    for alert in alerts(rule["spec"]["groups"]):
        anchor = alert["alert"].lower()
        assert (
            alert["annotations"]["runbook_url"]
            == f"https://wiki.example.com/taskstack/ops#{anchor}"
        )


# ---- item: values refused before they can hurt


@pytest.mark.parametrize(
    "values",
    [
        {"auth": {"autoscaling": {"minReplicas": 1}}},
        {"tasks": {"autoscaling": {"enabled": False}, "replicaCount": 1}},
        {"podSecurityContext": {"runAsUser": 0}},
        {"securityContext": {"runAsUser": 0}},
        {"telemetry": {"otlpEndpoint": "http://otel-collector.observability:4317"}},
    ],
    ids=["hpa-min-1-with-pdb", "one-replica-with-pdb", "pod-root", "container-root", "otlp-grpc"],
)
def test_schema_refuses(values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmValuesError):
        chart.chart().validate_schema(values)
    with pytest.raises(helm_python.HelmError, match="schema"):
        chart.render(values)


def test_one_replica_is_fine_without_a_budget() -> None:
    valid(
        chart.render(
            {
                "auth": {
                    "autoscaling": {"minReplicas": 1},
                    "podDisruptionBudget": {"enabled": False},
                },
                "tasks": {
                    "replicaCount": 1,
                    "autoscaling": {"enabled": False},
                    "podDisruptionBudget": {"enabled": False},
                },
            }
        )
    )


def test_the_startup_probe_must_outlast_the_database_wait() -> None:
    """60 s of probe (2 s x 30) cannot cover a 60 s wait for a waking Neon compute."""
    with pytest.raises(helm_python.HelmError, match=r"startupTimeout \(60 s\).*\(60 s\)"):
        chart.render({"database": {"startupTimeout": 60}})
    valid(
        chart.render(
            {"database": {"startupTimeout": 60}, "probes": {"startup": {"failureThreshold": 35}}}
        )
    )
    for path in CI_VALUES:
        chart.render_file(path)  # every example holds to it
