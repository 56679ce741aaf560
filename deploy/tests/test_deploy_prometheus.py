"""What Prometheus scrapes: the Prometheus Operator component (deploy/monitoring/operator) and the
plain scrape configuration (deploy/monitoring/prometheus.yaml) reach every service's admin port
and the NATS exporter, by the port names and pod labels the overlays really render."""

from __future__ import annotations

from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from .conftest import DEPLOY, OVERLAYS, SERVICES, Obj, deploy_with_dev_secrets, render
from .test_deploy_alerts import JOBS

SCRAPE_CONFIG = DEPLOY / "monitoring" / "prometheus.yaml"
# Each job's port: a service's admin port (conftest's SERVICES), the exporter's 7777.
PORTS = {**{name: admin for name, (admin, _) in SERVICES.items()}, "nats": 7777}


@pytest.fixture(scope="module")
def with_monitors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """Each overlay rendered with the operator component added to its kustomization, as the
    README says to (so the overlay's namespace applies to the PodMonitors)."""
    deploy = deploy_with_dev_secrets(tmp_path_factory.mktemp("monitored"))
    rendered = {}
    for overlay in OVERLAYS:
        path = deploy / "overlays" / overlay / "kustomization.yaml"
        kustomization = yaml.safe_load(path.read_text())
        kustomization["components"] = ["../../monitoring/operator"]
        path.write_text(yaml.safe_dump(kustomization))
        rendered[overlay] = render(path.parent)
    return rendered


def pod_templates(objects: list[Obj]) -> list[Obj]:
    return [o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def selected(monitor: Obj, templates: list[Obj]) -> list[Obj]:
    """The pod templates a PodMonitor's selector picks (matchLabels and `In` expressions)."""
    selector = monitor["spec"]["selector"]
    picked = []
    for template in templates:
        labels: dict[str, str] = template["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
            continue
        expressions: list[dict[str, Any]] = selector.get("matchExpressions", [])
        assert all(e["operator"] == "In" for e in expressions)
        if all(labels.get(e["key"]) in e["values"] for e in expressions):
            picked.append(template)
    return picked


def container_ports(template: Obj) -> dict[str, int]:
    return {
        port["name"]: port["containerPort"]
        for container in template["spec"]["containers"]
        for port in container.get("ports", [])
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_monitors_scrape_every_job_on_its_named_port(
    overlay: str, with_monitors: dict[str, list[Obj]]
) -> None:
    objects = with_monitors[overlay]
    monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    namespace = next(o for o in objects if o["kind"] == "Namespace")["metadata"]["name"]
    scraped: dict[str, int] = {}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == namespace
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        # The job label is the pod's name label: the jobs the alerts name.
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
        templates = selected(monitor, pod_templates(objects))
        assert templates, monitor["metadata"]["name"]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics"
        for template in templates:
            job = template["metadata"]["labels"]["app.kubernetes.io/name"]
            ports = container_ports(template)
            assert endpoint["port"] in ports, (job, ports)
            scraped[job] = ports[endpoint["port"]]
    assert scraped == PORTS
    assert sorted(scraped) == sorted(JOBS)


def test_the_overlays_alone_need_no_operator() -> None:
    # The component is optional: without the Operator's CRDs an overlay still applies.
    for overlay in OVERLAYS:
        text = (DEPLOY / "overlays" / overlay / "kustomization.yaml").read_text()
        assert "monitoring/operator" not in text


def test_the_plain_scrape_config_keeps_each_job_on_its_pods_and_port(
    with_monitors: dict[str, list[Obj]],
) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yaml"]
    templates = pod_templates(with_monitors["prod"])
    for job in config["scrape_configs"]:
        keeps = {
            tuple(r["source_labels"]): r["regex"]
            for r in job["relabel_configs"]
            if r.get("action") == "keep"
        }
        name_label = ("__meta_kubernetes_pod_label_app_kubernetes_io_name",)
        port_label = ("__meta_kubernetes_pod_container_port_name",)
        assert keeps[name_label] == job["job_name"]
        (template,) = [
            t
            for t in templates
            if t["metadata"]["labels"]["app.kubernetes.io/name"] == job["job_name"]
        ]
        assert container_ports(template)[keeps[port_label]] == PORTS[job["job_name"]]
        # The labels the alerts join on (`on (pod)`) and an operator filters by.
        targets = {r.get("target_label") for r in job["relabel_configs"]}
        assert {"namespace", "pod"} <= targets
        (discovery,) = job["kubernetes_sd_configs"]
        assert discovery["role"] == "pod"
        assert discovery["namespaces"]["names"] == ["ai-jobs"]


def test_every_pod_prometheus_scrapes_admits_it(with_monitors: dict[str, list[Obj]]) -> None:
    # The NetworkPolicy `prometheus-scrape` lets Prometheus in on every port scraped.
    policy = next(
        o
        for o in with_monitors["prod"]
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "prometheus-scrape"
    )
    (rule,) = policy["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} >= set(PORTS.values())
    (expression,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert set(expression["values"]) >= set(JOBS)


def test_the_scrape_config_is_where_the_readme_says() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert "deploy/monitoring/prometheus.yaml" in readme
    assert "deploy/monitoring/operator" in readme
    assert "deploy/RUNBOOK.md" in readme
