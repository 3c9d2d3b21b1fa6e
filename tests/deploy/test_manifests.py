"""The Dockerfile, compose file, Kubernetes manifests and Grafana provisioning hold together:
hadolint, Kubernetes schemas, and cross-checks against the code they deploy."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import httpx
import kubernetes_validate
import pytest
import yaml

from service.cli.main import cli
from service.config import Settings
from service.worker import worker_options

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_DOCS = [
    doc
    for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text("utf-8"))
    if doc
]
SETTINGS_ENV = {f"QGW_{name.upper()}" for name in Settings.model_fields}
# The archive store's own settings, read by obstore (README "Archive").
STORE_ENV = ("AWS_", "GOOGLE_", "AZURE_")


def parse_command(args: list[str]) -> click.Context:
    """Parse a command line as `qingbo-gateway` would (click raises on a bad role or flag);
    the role's context."""
    top = click.Context(cli, info_name="qingbo-gateway")
    command = cli.get_command(top, args[0])
    assert command is not None, f"no role {args[0]!r}"
    return command.make_context(args[0], list(args[1:]), parent=top)


def unknown_settings(names: Any) -> set[str]:
    return {n for n in names if n not in SETTINGS_ENV and not n.startswith(STORE_ENV)}


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv/bin/hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text("utf-8")
    assert re.search(r"^USER 10001$", text, re.M)
    assert "HEALTHCHECK" in text and 'ENTRYPOINT ["qingbo-gateway"]' in text
    assert text.count("FROM ") == 2  # multi-stage


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8")))


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "redis",
        "simulator",
        "migrate",
        "api",
        "worker",
        "prometheus",
        "grafana",
        "seaweedfs",
    }
    for name in ("simulator", "migrate", "api", "worker"):
        command = services[name]["command"]
        assert parse_command(command).info_name == name  # a real role with valid flags
        assert not unknown_settings(services[name]["environment"])
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["api"]["ports"] == ["8000:8000"]
    job_wait = worker_options(Settings())["job_completion_wait"]
    assert int(services["worker"]["stop_grace_period"].rstrip("s")) > job_wait
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source


def test_compose_refuses_to_start_without_the_admin_and_metrics_tokens(
    compose: dict[str, Any],
) -> None:
    """`${VAR:?message}`: compose stops with the message when VAR is unset or empty, so
    no stack comes up with a guessable admin token or an open /metrics."""
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        for var in ("QGW_ADMIN_TOKEN", "QGW_METRICS_TOKEN"):
            assert re.fullmatch(rf"\$\{{{var}:\?set {var}\b.*\}}", env[var]), env[var]
    assert compose["secrets"]["metrics_token"] == {"environment": "QGW_METRICS_TOKEN"}
    assert compose["services"]["prometheus"]["secrets"] == ["metrics_token"]
    monitor = next(d for d in K8S_DOCS if d["kind"] == "ServiceMonitor")
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["authorization"]["credentials"]["key"] == "QGW_METRICS_TOKEN"


def test_prometheus_scrapes_what_compose_serves(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text("utf-8"))
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert targets == {"api:8000", f"worker:{Settings().worker_http_port}"}


@pytest.mark.parametrize(
    "doc",
    [d for d in K8S_DOCS if "coreos" not in d["apiVersion"]],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_kubernetes_manifests_match_the_schemas(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_manifests_fit_the_code() -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in K8S_DOCS:
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Job",
        "ConfigMap",
        "Secret",
        "ServiceMonitor",
    } <= set(by_kind)
    for kind in ("ConfigMap", "Secret"):
        for doc in by_kind[kind]:
            keys = set(doc.get("data", {})) | set(doc.get("stringData", {}))
            assert not unknown_settings(keys), unknown_settings(keys)
    job_wait = worker_options(Settings())["job_completion_wait"]
    for deployment in by_kind["Deployment"]:
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        parse_command(container["args"])
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert "limits" in container["resources"] and "requests" in container["resources"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        if container["args"][0] == "worker":
            assert pod["terminationGracePeriodSeconds"] > job_wait
    monitor = by_kind["ServiceMonitor"][0]
    ports = {p["name"] for svc in by_kind["Service"] for p in svc["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def _metric_names(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(qgw_[a-z0-9_]+)", expr)}


async def test_dashboard_queries_only_exported_metrics(client: httpx.AsyncClient) -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/qingbo-gateway.json").read_text("utf-8"))
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= _metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        used |= _metric_names(variable["definition"])
    scrape = (await client.get("/metrics")).text
    exported = set()
    for line in scrape.splitlines():
        match = re.match(r"# (?:HELP|TYPE) (\S+)", line) or re.match(r"(qgw_[a-z0-9_]+)", line)
        if match:
            name = match.group(1)
            exported |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    assert used and used <= exported, used - exported


def test_the_operator_rules_are_the_alert_rules() -> None:
    (rule,) = [d for d in K8S_DOCS if d["kind"] == "PrometheusRule"]
    alerts = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text("utf-8"))
    assert rule["spec"]["groups"] == alerts["groups"]


def test_compose_keeps_prometheus_and_grafana_on_loopback_and_grafana_closed(
    compose: dict[str, Any],
) -> None:
    """Issue 31, point 8: every team's spend is in Prometheus and Grafana. Neither is
    published beyond the host's loopback; Grafana has no anonymous viewer and its admin
    password comes from a compose secret (the environment of the one who starts it), never
    a default or a value in the file."""
    services = compose["services"]
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    assert services["grafana"]["ports"] == ["127.0.0.1:3000:3000"]
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env  # a value in the file is no secret
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert services["grafana"]["secrets"] == ["grafana_admin_password"]
    assert compose["secrets"]["grafana_admin_password"] == {"environment": "GRAFANA_ADMIN_PASSWORD"}
    # Compose stops with this message when it is unset: no Grafana with an empty password.
    required = compose["x-required-secrets"]
    assert re.fullmatch(
        r"\$\{GRAFANA_ADMIN_PASSWORD:\?set GRAFANA_ADMIN_PASSWORD\b.*\}", required["grafana"]
    )
    for name, service in services.items():
        for port in service.get("ports", []):
            if name != "api":  # the one door meant for the network
                assert str(port).startswith("127.0.0.1:"), (name, port)


def _pods() -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Each workload's pod spec and pod labels, by component."""
    pods = {}
    for doc in K8S_DOCS:
        if doc["kind"] in ("Deployment", "Job"):
            template = doc["spec"]["template"]
            component = template["metadata"]["labels"]["app.kubernetes.io/component"]
            pods[component] = (template["spec"], template["metadata"]["labels"])
    return pods


def test_kubernetes_pods_mount_no_service_account_token_and_use_seccomp() -> None:
    """Issue 31, point 9: the gateway never calls the Kubernetes API, so no pod carries a
    service account token; every pod runs under the runtime's default seccomp profile."""
    pods = _pods()
    assert set(pods) == {"api", "worker", "migrate"}
    for component, (pod, _) in pods.items():
        assert pod["automountServiceAccountToken"] is False, component
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, component


def _ports(rules: list[dict[str, Any]]) -> set[tuple[str, Any]]:
    return {(p.get("protocol", "TCP"), p["port"]) for rule in rules for p in rule["ports"]}


def test_kubernetes_network_policies_open_only_what_each_role_needs() -> None:
    """Issue 31, point 9: the API takes traffic on its port only, a worker on its metrics
    and probe port only, the migration job none; out, each reaches DNS, Postgres, Redis and
    HTTPS (Qingbo, the archive store, receivers) and nothing else."""
    policies = [d for d in K8S_DOCS if d["kind"] == "NetworkPolicy"]
    by_component = {}
    for policy in policies:
        assert policy["apiVersion"] == "networking.k8s.io/v1"
        spec = policy["spec"]
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        selected = spec["podSelector"]["matchLabels"]
        matches = [c for c, (_, labels) in _pods().items() if selected.items() <= labels.items()]
        assert len(matches) == 1, (policy["metadata"]["name"], matches)
        by_component[matches[0]] = spec
    assert set(by_component) == {"api", "worker", "migrate"}
    containers = {c: pod["containers"][0] for c, (pod, _) in _pods().items()}
    api_port = containers["api"]["ports"][0]
    worker_port = containers["worker"]["ports"][0]
    assert _ports(by_component["api"]["ingress"]) in (
        {("TCP", api_port["name"])},
        {("TCP", api_port["containerPort"])},
    )
    assert _ports(by_component["worker"]["ingress"]) in (
        {("TCP", worker_port["name"])},
        {("TCP", worker_port["containerPort"])},
    )
    assert by_component["migrate"].get("ingress", []) == []
    dns = {("UDP", 53), ("TCP", 53)}
    for component in ("api", "worker"):
        egress = _ports(by_component[component]["egress"])
        assert egress == dns | {("TCP", 5432), ("TCP", 6379), ("TCP", 443)}, component
    assert _ports(by_component["migrate"]["egress"]) == dns | {("TCP", 5432)}
