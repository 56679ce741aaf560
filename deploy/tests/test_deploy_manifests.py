"""The rendered overlays: valid Kubernetes objects, and the properties the deployment promises
for every service (probes, limits, restricted security, graceful shutdown, scaling, disruption
budgets, the Ingress, NATS and Postgres per environment), with settings the services accept."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import msgspec
import pytest
import yaml  # type: ignore[import-untyped]

from ai_runner.config import Settings as AiRunnerSettings
from gateway.adapters.metrics import OPEN_STREAMS
from gateway.config import Settings as GatewaySettings
from job_store.config import MigrateSettings
from job_store.config import Settings as JobStoreSettings
from jobs_proto.permissions import render_deploy_authorization
from jobs_runtime.bus import DRAIN_TIMEOUT_S
from jobs_runtime.http import GRACEFUL_CLOSE_S
from jobs_runtime.secrets import SecretKind, refusal
from jobs_runtime.settings import EnvSettings, load_settings
from jobs_testkit import cluster_secrets
from jobs_testkit.servers.tls import make_server_certificate
from replicate_sim.config import Settings as SimulatorSettings
from webhook_ingest.config import Settings as WebhookIngestSettings

from .conftest import DEPLOY, OVERLAYS, PROD_WITH_COMPONENTS, ROOT, SERVICES, Obj, Rendered

SETTINGS: dict[str, type[EnvSettings]] = {
    "gateway": GatewaySettings,
    "webhook-ingest": WebhookIngestSettings,
    "ai-runner": AiRunnerSettings,
    "job-store": JobStoreSettings,
}
# The oldest Kubernetes these manifests claim to work on, and the newest schemas installed.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# API groups of custom resources (Gateway API, KEDA): not in kubernetes-validate's schemas,
# checked structurally instead (test_deploy_edge.py, test_keda_scales_the_gateway_on_streams).
CUSTOM_GROUPS = ("gateway.networking.k8s.io", "keda.sh")
# What the kubelet's grace period must leave after the worst-case shutdown.
SHUTDOWN_MARGIN_S = 5
# The headroom the gateway's memory limit keeps over its measured needs (requests in hand,
# slow clients' queues, heap fragmentation), and the most it may keep (past it, MAX_STREAMS
# should grow with the limit).
MEMORY_HEADROOM = 1.25
MEMORY_HEADROOM_AT_MOST = 1.25 * MEMORY_HEADROOM


def deployment(r: Rendered, name: str) -> Obj:
    return r.get("Deployment", name)


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def main_container(workload: Obj, name: str) -> Obj:
    (container,) = [c for c in pod_spec(workload)["containers"] if c["name"] == name]
    return container


def field_names(settings: type[EnvSettings]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(settings)}


@pytest.mark.parametrize("overlay", [*OVERLAYS, PROD_WITH_COMPONENTS])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(
    rendered: dict[str, Rendered], overlay: str, version: str
) -> None:
    for obj in rendered[overlay].objects:
        if obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS:
            continue
        # strict: an unknown or misplaced field is an error, not silently dropped by the API.
        kubernetes_validate.validate(obj, version, strict=True)


def test_overlays_differ_where_the_issue_says(rendered: dict[str, Rendered]) -> None:
    dev, prod = rendered["dev"], rendered["prod"]
    # The simulator and an in-cluster Postgres only in dev.
    assert dev.find("Deployment", "replicate-sim") is not None
    assert dev.find("StatefulSet", "postgres") is not None
    assert prod.find("Deployment", "replicate-sim") is None
    assert prod.find("StatefulSet", "postgres") is None
    assert not [o for o in prod.objects if "replicate-sim" in str(o)]
    # Prod secrets are created by the operator, never rendered from the repository.
    assert prod.of_kind("Secret") == []
    for r in (dev, prod):
        namespaces = {o["metadata"].get("namespace") for o in r.objects if o["kind"] != "Namespace"}
        (namespace,) = r.of_kind("Namespace")
        assert namespaces == {namespace["metadata"]["name"]}
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_service_deployment(rendered: dict[str, Rendered], overlay: str, service: str) -> None:
    r = rendered[overlay]
    admin_port, http_port = SERVICES[service]
    workload = deployment(r, service)
    spec = pod_spec(workload)
    container = main_container(workload, service)

    # The service's own image and command.
    assert re.fullmatch(rf"(.+/)?ai-jobs/{service}:[\w.-]+", container["image"])
    assert container["command"] == [service]

    # Kubernetes would otherwise set <SERVICE>_PORT variables in the container.
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    assert r.get("ServiceAccount", spec["serviceAccountName"])

    # Probes on the admin port: started (healthz), alive (healthz), ready (readyz).
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == admin_port
    assert ports.get("http") == http_port
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "admin"}, probe

    # Requests and limits for CPU and memory; requests within limits.
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"]
        assert kind in resources["limits"]

    # The restricted profile: non-root, no escalation, no capabilities, RuntimeDefault seccomp,
    # a read-only root filesystem with an emptyDir for /tmp.
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] >= 10000
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"] + spec.get("initContainers", []):
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["runAsNonRoot"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], c["name"]
        assert "resources" in c, c["name"]

    # Graceful shutdown: test_the_shutdown_fits_the_grace_period.
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"

    # Spread over zones and nodes.
    spread = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": service}

    # Prometheus finds /metrics on the admin port.
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(admin_port)

    # A Service selects the pods, for the admin port and the HTTP API.
    svc = r.get("Service", service)
    assert svc["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
    svc_ports = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
    assert svc_ports["admin"] == "admin"
    assert ("http" in svc_ports) == (http_port is not None)


def loaded_settings(r: Rendered, service: str, tmp_path: Path) -> Any:
    """The settings the service's container loads (its `NATS_TLS_CA` a stand-in file: the
    settings check only that it exists)."""
    env = r.environment(main_container(deployment(r, service), service))
    if "NATS_TLS_CA" in env:
        env["NATS_TLS_CA"] = str(tmp_path / "ca.crt")
        (tmp_path / "ca.crt").write_text("")
    return load_settings(SETTINGS[service], env)


def worst_case_shutdown_s(pre_stop_s: float, shutdown_grace_s: float, http: bool) -> float:
    """The longest a service's pod can take to stop, preStop included, as
    `jobs_runtime.service.serve` stops: after SIGTERM the service's work (for an HTTP service,
    its listener's graceful close among it) gets SHUTDOWN_GRACE_S before it is cancelled; then
    the NATS connection drains, then the admin listener closes."""
    work = shutdown_grace_s
    if http:
        # The public listener closes inside the work's grace, or past it when that is shorter.
        work = max(work, GRACEFUL_CLOSE_S)
    return pre_stop_s + work + DRAIN_TIMEOUT_S + GRACEFUL_CLOSE_S


def test_the_shutdown_arithmetic() -> None:
    # What base/*.yaml's comments add up: 5 + 20 + 5 + 10.
    assert worst_case_shutdown_s(5, 20, http=True) == 40
    assert worst_case_shutdown_s(5, 20, http=False) == 40
    assert worst_case_shutdown_s(5, 2, http=True) == 5 + GRACEFUL_CLOSE_S + 5 + 10


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_the_shutdown_fits_the_grace_period(
    rendered: dict[str, Rendered], overlay: str, service: str, tmp_path: Path
) -> None:
    """The kubelet's grace period counts from the preStop hook: the preStop sleep (endpoints
    and the edge drop the pod), then the whole shutdown after SIGTERM must fit it, with a
    margin, or SIGKILL cuts the NATS drain (unflushed acks and publishes)."""
    r = rendered[overlay]
    workload = deployment(r, service)
    container = main_container(workload, service)
    (command, seconds) = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command == "sleep"
    settings = loaded_settings(r, service, tmp_path)
    http = SERVICES[service][1] is not None
    needed = worst_case_shutdown_s(float(seconds), settings.shutdown_grace_s, http)
    grace = pod_spec(workload)["terminationGracePeriodSeconds"]
    assert grace >= needed + SHUTDOWN_MARGIN_S, (service, grace, needed)


def mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB (the binary suffixes the manifests use)."""
    units = {"Ki": 1 / 1024, "Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]


def measured_stream_memory() -> tuple[float, float]:
    """The most the benchmark's `sse memory` scenario measured (bench/results): the idle
    gateway's RSS in MiB, and the RSS each open stream added, in KiB."""
    idle_mib, per_stream_kib = 0.0, 0.0
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        rows = [r for r in json.loads(path.read_text())["rows"] if r["scenario"] == "sse memory"]
        by_figure = {r["figure"]: r for r in rows}
        idle = by_figure.get("gateway RSS, no stream open")
        holding = [r for r in rows if re.fullmatch(r"gateway RSS holding \d+ streams", r["figure"])]
        if idle is None or not holding:
            continue
        to_mib = {"MiB": 1.0, "MB": 1e6 / 2**20}
        idle_value = idle["value"] * to_mib[idle["unit"]]
        streams = int(holding[0]["figure"].split()[3])
        added_kib = (holding[0]["value"] * to_mib[holding[0]["unit"]] - idle_value) * 1024
        idle_mib = max(idle_mib, idle_value)
        per_stream_kib = max(per_stream_kib, added_kib / streams)
    assert per_stream_kib > 0, "no `sse memory` figures in bench/results"
    return idle_mib, per_stream_kib


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_memory_limit_holds_max_streams(
    rendered: dict[str, Rendered], overlay: str, tmp_path: Path
) -> None:
    """MAX_STREAMS open streams, the finished jobs' cache and the idle process, from the
    benchmark's figures, with headroom, fit the memory limit (base/gateway.yaml shows the
    math); and the limit is not far above it (MAX_STREAMS would then refuse streams the pod
    has room for). The request equals the limit."""
    r = rendered[overlay]
    container = main_container(deployment(r, "gateway"), "gateway")
    settings = loaded_settings(r, "gateway", tmp_path)
    assert settings.max_streams > 0, "MAX_STREAMS bounds the memory streams take"
    idle_mib, per_stream_kib = measured_stream_memory()
    needed = (
        idle_mib + settings.job_cache_bytes / 2**20 + settings.max_streams * per_stream_kib / 1024
    ) * MEMORY_HEADROOM
    limit = mebibytes(container["resources"]["limits"]["memory"])
    assert needed <= limit <= needed * MEMORY_HEADROOM_AT_MOST, (needed, limit)
    resources = container["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_keda_scales_the_gateway_on_streams(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    """The keda-gateway component: a ScaledObject on the gateway's open streams (the gauge the
    gateway exports), below MAX_STREAMS, in place of the CPU HPA, never beside it."""
    r = rendered[PROD_WITH_COMPONENTS]
    assert r.find("HorizontalPodAutoscaler", "gateway") is None
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in r.of_kind("HorizontalPodAutoscaler")}
    assert hpas == {"webhook-ingest"}
    (scaled,) = r.of_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == "ai-jobs"
    spec = scaled["spec"]
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "advanced",
        "triggers",
        "fallback",
    }
    assert spec["scaleTargetRef"] == {"name": "gateway"}
    assert "replicas" not in deployment(r, "gateway")["spec"]
    base_hpa = rendered["prod"].get("HorizontalPodAutoscaler", "gateway")["spec"]
    assert spec["minReplicaCount"] == base_hpa["minReplicas"]
    assert spec["maxReplicaCount"] == base_hpa["maxReplicas"]
    # The same slow scale-down as the HPA's (KEDA hands it to the HPA it makes), valid as one.
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == base_hpa["behavior"]
    as_hpa = {**rendered["prod"].get("HorizontalPodAutoscaler", "gateway")}
    kubernetes_validate.validate(
        {**as_hpa, "spec": {**base_hpa, "behavior": behavior}}, KUBERNETES_VERSIONS[1], strict=True
    )
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}
    prometheus = triggers["prometheus"]["metadata"]
    assert set(prometheus) <= {"serverAddress", "query", "threshold", "ignoreNullValues"}
    assert re.fullmatch(r"https?://[\w.-]+(:\d+)?", prometheus["serverAddress"])
    (metric,) = [m.name for m in OPEN_STREAMS.describe()]
    assert prometheus["query"] == f'sum({metric}{{namespace="{scaled["metadata"]["namespace"]}"}})'
    max_streams = loaded_settings(r, "gateway", tmp_path).max_streams
    # Room on each pod for the streams that arrive while a new pod starts.
    assert 0 < int(prometheus["threshold"]) <= 0.75 * max_streams
    cpu = triggers["cpu"]
    assert cpu["metricType"] == "Utilization"
    assert cpu["metadata"]["value"] == str(
        base_hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_the_service_accepts_its_configuration(
    rendered: dict[str, Rendered], overlay: str, service: str, tmp_path: Path
) -> None:
    """What the ConfigMaps and Secrets give each container loads as the service's own settings,
    names only settings it has, and matches the ports the manifests probe."""
    r = rendered[overlay]
    settings_type = SETTINGS[service]
    container = main_container(deployment(r, service), service)
    env = r.environment(container)
    # The prod overlay leaves the secrets to the operator; they must be referenced, though.
    required = {n for group in settings_type.required_in_prod for n in group.split("|")}
    refs = {v["name"] for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})}
    # Not secrets: the NATS address and user, the JWKS URL, the token issuer and audience.
    not_secret = {"NATS_URL", "AUTH_JWKS_URL", "AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"}
    assert required - not_secret - {"NATS_USER", "NATS_CREDS"} <= refs
    # Its own NATS user, its password from the Secret NATS reads the same passwords from.
    users = {v["name"]: v for v in container.get("env", [])}
    assert users["NATS_USER"]["value"] == service
    password_ref = users["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password_ref["name"].startswith("nats-users")  # dev's is generated, hash-suffixed
    assert password_ref["key"] == service
    unknown = set(env) - field_names(settings_type)
    assert not unknown, f"settings {service} does not read: {sorted(unknown)}"

    if "NATS_TLS_CA" in env:
        # The file the pod mounts from the `nats-tls` Secret (checked in
        # test_prod_services_trust_the_nats_certificate_authority_alone); a throwaway one here.
        env["NATS_TLS_CA"] = str(make_server_certificate(tmp_path / "tls").ca_file)
    settings: Any = load_settings(settings_type, env)
    assert settings.app_env == ("dev" if overlay == "dev" else "prod")
    if service == "gateway" and overlay == "prod":
        # Checked on every token in prod (the settings refuse to start without them).
        assert settings.auth_jwt_issuer.startswith("https://")
        assert settings.auth_jwt_audience
    assert settings.admin_port == SERVICES[service][0]
    if SERVICES[service][1] is not None:
        assert settings.http_port == SERVICES[service][1]
    # The bus is the in-cluster NATS Service, and streams are replicated on its nodes.
    assert settings.nats_url == ("nats://nats:4222" if overlay == "dev" else "tls://nats:4222")
    assert settings.nats_user == service
    assert r.get("Service", "nats")["spec"]["ports"][0]["port"] == 4222
    nodes = r.get("StatefulSet", "nats")["spec"]["replicas"]
    assert settings.stream_replicas == min(nodes, 3)


def test_secrets_the_contract_names_are_referenced(rendered: dict[str, Rendered]) -> None:
    r = rendered["prod"]
    expected = {
        "gateway": "AUTH_JWT_SECRET",
        "ai-runner": "REPLICATE_API_TOKEN",
        "webhook-ingest": "REPLICATE_WEBHOOK_SECRET",
        "job-store": "DATABASE_URL",
    }
    for service, variable in expected.items():
        container = main_container(deployment(r, service), service)
        (ref,) = [v for v in container["env"] if v["name"] == variable]
        assert "secretKeyRef" in ref["valueFrom"]
        # A secret never sits in a ConfigMap.
        for source in container["envFrom"]:
            assert variable not in r.config_map(source["configMapRef"]["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_as_an_init_container(rendered: dict[str, Rendered], overlay: str) -> None:
    r = rendered[overlay]
    workload = deployment(r, "job-store")
    (init,) = pod_spec(workload)["initContainers"]
    main = main_container(workload, "job-store")
    assert init["command"] == ["job-store", "migrate"]
    assert init["image"] == main["image"]
    env = r.environment(init)
    assert set(env) <= field_names(MigrateSettings)
    migrate = load_settings(MigrateSettings, env)
    assert migrate.database_url == r.environment(main)["DATABASE_URL"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling(rendered: dict[str, Rendered], overlay: str) -> None:
    r = rendered[overlay]
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {"gateway", "webhook-ingest"}
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # The HPA owns the count: a `replicas` in the Deployment would reset it on every apply.
        assert "replicas" not in deployment(r, name)["spec"]
        if overlay == "prod":
            assert hpa["spec"]["minReplicas"] >= 2
    # The ai-runner is bounded by Replicate, not CPU: a fixed count (two in prod).
    expected = 2 if overlay == "prod" else 1
    assert deployment(r, "ai-runner")["spec"]["replicas"] == expected
    assert deployment(r, "job-store")["spec"]["replicas"] == expected


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_disruption_budget(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    r = rendered[overlay]
    budgets = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items())): p
        for p in r.of_kind("PodDisruptionBudget")
    }
    for workload in r.of_kind("Deployment") + r.of_kind("StatefulSet"):
        name = workload["metadata"]["name"]
        if name in ("replicate-sim", "postgres"):
            continue  # dev-only singletons: a drained node may take them down
        key = tuple(sorted(workload["spec"]["selector"]["matchLabels"].items()))
        assert key in budgets, name
        assert budgets[key]["spec"]["maxUnavailable"] == 1
        # An unready pod may always be evicted: an outage that makes every pod unready must
        # not block node drains.
        assert budgets[key]["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", name


def test_dev_has_no_public_entry(rendered: dict[str, Rendered]) -> None:
    r = rendered["dev"]
    assert r.of_kind("Ingress") == []
    assert not [p for p in r.of_kind("NetworkPolicy") if "ingress" in p["metadata"]["name"]]
    # The simulator calls webhook-ingest's Service directly; people use `kubectl port-forward`.
    runner = r.environment(main_container(deployment(r, "ai-runner"), "ai-runner"))
    assert runner["REPLICATE_WEBHOOK_URL"] == "http://webhook-ingest:8001/api/webhooks/replicate"
    assert runner["REPLICATE_BASE_URL"] == "http://replicate-sim:8010"


def test_dev_secrets_are_generated_never_committed(rendered: dict[str, Rendered]) -> None:
    overlay = DEPLOY / "overlays" / "dev"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    generators = kustomization["secretGenerator"]
    # Named by content hash, as ConfigMaps are: a new secret rolls the pods that read it.
    names = {s["metadata"]["name"].rsplit("-", 1)[0] for s in _dev_secrets(rendered)}
    assert {g["name"] for g in generators} == names
    for generator in generators:
        assert set(generator) == {"name", "envs"}, generator["name"]  # no literals, no files
        for env_file in generator["envs"]:
            assert env_file.startswith("secrets/")
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(overlay / "secrets" / "gateway-auth.env")],
        cwd=DEPLOY,
        check=False,
    )
    assert ignored.returncode == 0, "deploy/overlays/dev/secrets/ must be in .gitignore"
    # What the command made is nothing the repository publishes, and would even pass prod.
    for secret in _dev_secrets(rendered):
        for key, encoded in secret["data"].items():
            value = base64.b64decode(encoded).decode()
            kind: SecretKind = "url" if key == "DATABASE_URL" else "hs256"
            assert refusal(kind, value) is None, (secret["metadata"]["name"], key)


def _dev_secrets(rendered: dict[str, Rendered]) -> list[Obj]:
    return rendered["dev"].of_kind("Secret")


def test_dev_secrets_are_made_once_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    assert cluster_secrets.write(folder)
    first = {p.name: p.read_text() for p in folder.iterdir()}
    # Postgres keeps the password it first started with: a second run changes nothing.
    assert not cluster_secrets.write(folder)
    assert {p.name: p.read_text() for p in folder.iterdir()} == first
    assert all(p.stat().st_mode & 0o077 == 0 for p in folder.iterdir())
    # A release that adds a NATS user (`jobsctl`'s): its password is added, the rest kept.
    users = folder / "nats-users.env"
    kept = [line for line in users.read_text().splitlines() if not line.startswith("ops=")]
    users.write_text("\n".join(kept) + "\n")
    assert cluster_secrets.write(folder)
    assert users.read_text().startswith("\n".join(kept) + "\nops=nats_")
    assert {p.name: p.read_text() for p in folder.iterdir() if p != users} == {
        k: v for k, v in first.items() if k != users.name
    }
    assert not cluster_secrets.write(folder)
    (folder / "postgres.env").unlink()
    assert cluster_secrets.write(folder)  # a partial set is remade whole, so it agrees
    again = {p.name: p.read_text() for p in folder.iterdir()}
    assert again.keys() == first.keys()
    assert again["job-store-database.env"] != first["job-store-database.env"]


def test_prod_services_trust_the_nats_certificate_authority_alone(
    rendered: dict[str, Rendered],
) -> None:
    """Prod services refuse a NATS password over plain text: each mounts the CA of the Secret
    NATS serves its certificate from (not the key) where NATS_TLS_CA points."""
    r = rendered["prod"]
    for service in SERVICES:
        deployment = r.get("Deployment", service)
        container = main_container(deployment, service)
        env = r.environment(container)
        assert env["NATS_URL"].startswith("tls://nats:")
        (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "nats-ca"]
        assert volume["secret"] == {
            "secretName": "nats-tls",
            "items": [{"key": "ca.crt", "path": "ca.crt"}],
        }
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "nats-ca"]
        assert mount["readOnly"] is True
        assert env["NATS_TLS_CA"] == f"{mount['mountPath']}/ca.crt"


def nats_config(r: Rendered) -> str:
    statefulset = r.get("StatefulSet", "nats")
    (volume,) = [v for v in pod_spec(statefulset)["volumes"] if v["name"] == "config"]
    text: str = r.config_map(volume["configMap"]["name"])["nats.conf"]
    return text


@pytest.mark.parametrize(("overlay", "nodes"), [("dev", 1), ("prod", 3)])
def test_nats(rendered: dict[str, Rendered], overlay: str, nodes: int, tmp_path: Path) -> None:
    r = rendered[overlay]
    statefulset = r.get("StatefulSet", "nats")
    assert statefulset["spec"]["replicas"] == nodes
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    config = nats_config(r)
    assert re.search(r"^max_payload: 8388608$", config, re.M)  # 8 MiB
    assert "jetstream {" in config
    routes = re.findall(r"nats://(nats-\d+)\.nats-headless:6222", config)
    assert routes == [f"nats-{i}" for i in range(nodes)] if nodes > 1 else routes == []
    # The real nats-server accepts the configuration (as the pod will, with its POD_NAME).
    path = tmp_path / "nats.conf"
    path.write_text(config)
    (volume,) = [v for v in pod_spec(statefulset)["volumes"] if v["name"] == "config"]
    users = r.config_map(volume["configMap"]["name"])["users.conf"]
    (tmp_path / "users.conf").write_text(users)
    # The pod's certificate files (prod), here a throwaway CA's, at the paths tls.conf names.
    tls = r.config_map(volume["configMap"]["name"])["tls.conf"]
    if overlay == "prod":
        assert "include tls.conf" in config
        mounts = {
            m["name"]: m["mountPath"] for m in main_container(statefulset, "nats")["volumeMounts"]
        }
        (tls_volume,) = [v for v in pod_spec(statefulset)["volumes"] if v["name"] == "tls"]
        assert tls_volume["secret"]["secretName"] == "nats-tls"
        assert f"cert_file: {mounts['tls']}/tls.crt" in tls
        certificate = make_server_certificate(tmp_path / "tls", ("nats",))
        tls = tls.replace(f"{mounts['tls']}/tls.crt", str(certificate.cert_file))
        tls = tls.replace(f"{mounts['tls']}/tls.key", str(certificate.key_file))
    else:
        assert "tls {" not in tls  # dev: plain, as `make run`
    (tmp_path / "tls.conf").write_text(tls)
    assert "include users.conf" in config
    assert "no_auth_user" not in config + users  # no anonymous access
    for service in SERVICES:
        assert f'user: "{service}"' in users
    # With the passwords the pod gets from the `nats-users` Secret.
    passwords = r.environment(main_container(statefulset, "nats"))
    nats_server = Path(sys.executable).parent / "nats-server"
    done = subprocess.run(
        [str(nats_server), "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **passwords, "POD_NAME": "nats-0"},
        check=False,
    )
    assert done.returncode == 0, done.stderr

    # Lame duck mode moves clients away before the pod is killed.
    lame_duck = re.search(r"^lame_duck_duration: (\d+)s$", config, re.M)
    assert lame_duck is not None
    assert pod_spec(statefulset)["terminationGracePeriodSeconds"] > int(lame_duck[1])
    pre_stop = main_container(statefulset, "nats")["lifecycle"]["preStop"]["exec"]["command"]
    assert "ldm=/var/run/nats/nats.pid" in shlex.join(pre_stop)


def test_the_nats_users_are_rendered_from_proto() -> None:
    committed = Path(__file__).parents[1] / "base" / "nats" / "users.conf"
    assert committed.read_text() == render_deploy_authorization(), (
        "deploy/base/nats/users.conf is stale: run `make nats-users`"
    )


def test_dev_postgres_serves_the_job_store(rendered: dict[str, Rendered]) -> None:
    r = rendered["dev"]
    postgres = r.get("StatefulSet", "postgres")
    env = r.environment(main_container(postgres, "postgres"))
    database_url = r.environment(main_container(deployment(r, "job-store"), "job-store"))[
        "DATABASE_URL"
    ]
    expected = f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/"
    assert database_url == expected + env["POSTGRES_DB"]
    assert r.get("Service", "postgres")["spec"]["ports"][0]["port"] == 5432


def test_dev_simulator_signs_with_the_secret_webhook_ingest_checks(
    rendered: dict[str, Rendered],
) -> None:
    r = rendered["dev"]
    simulator = main_container(deployment(r, "replicate-sim"), "replicate-sim")
    env = r.environment(simulator)
    settings = load_settings(SimulatorSettings, env)
    ingest = r.environment(main_container(deployment(r, "webhook-ingest"), "webhook-ingest"))
    assert settings.sim_webhook_secret == ingest["REPLICATE_WEBHOOK_SECRET"]
    assert set(env) <= field_names(SimulatorSettings)


def test_examples_outside_the_kustomizations() -> None:
    """The optional KEDA, CloudNativePG and PrometheusRule examples are not rendered by any
    overlay (they need CRDs); they name the objects the overlays create."""

    from jobs_proto.stream import ai_runner_consumer
    from jobs_proto.subjects import Subjects

    kustomizations = [yaml.safe_load(p.read_text()) for p in DEPLOY.rglob("kustomization.yaml")]
    assert "examples" not in json.dumps(kustomizations)  # comments may name them
    docs = {
        p.name: list(yaml.safe_load_all(p.read_text()))
        for p in (DEPLOY / "examples").glob("*.yaml")
    }
    (scaled, _) = docs["keda-ai-runner.yaml"]
    assert scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "ai-runner"
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["consumer"] == ai_runner_consumer(Subjects()).durable
    assert trigger["stream"] == "JOBS"
    assert scaled["spec"]["minReplicaCount"] >= 2
    cluster = docs["cnpg-cluster.yaml"][0]
    assert cluster["kind"] == "Cluster"
    assert cluster["apiVersion"].startswith("postgresql.cnpg.io/")
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "jobs"
    # The plain objects among the examples are valid too.
    plain = [o for objects in docs.values() for o in objects if "." not in o["apiVersion"]]
    plain += [o for objects in docs.values() for o in objects if o["kind"] == "NetworkPolicy"]
    assert plain
    for obj in plain:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[1], strict=True)


def test_the_first_apply_selector_holds_back_the_services_alone(
    rendered: dict[str, Rendered],
) -> None:
    """deploy/README.md applies NATS first with `-l 'app.kubernetes.io/component notin (...)'`:
    it must leave out the four services' Deployments and nothing else."""
    readme = (DEPLOY / "README.md").read_text()
    found = re.search(r"-l 'app\.kubernetes\.io/component notin \(([\w,]+)\)'", readme)
    assert found is not None
    held_back = set(found[1].split(","))
    for name in ("prod", PROD_WITH_COMPONENTS):
        left_out = {
            (o["kind"], o["metadata"]["name"])
            for o in rendered[name].objects
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") in held_back
        }
        assert left_out == {("Deployment", service) for service in SERVICES}, name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_jobsctl_pod_is_valid_restricted_and_reaches_nats(
    rendered: dict[str, Rendered], version: str
) -> None:
    """examples/jobsctl.yaml: a valid, restricted pod as NATS user `ops`, whose name the
    NetworkPolicies let reach NATS's client port."""
    pod = yaml.safe_load((DEPLOY / "examples" / "jobsctl.yaml").read_text())
    kubernetes_validate.validate(pod, version, strict=True)
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    env = {v["name"]: v for v in container["env"]}
    assert env["NATS_USER"]["value"] == "ops"
    assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "nats-users", "key": "ops"}
    name = pod["metadata"]["labels"]["app.kubernetes.io/name"]
    for policy in ("services-to-nats", "nats-from-services"):
        text = json.dumps(rendered["prod"].get("NetworkPolicy", policy))
        assert f'"{name}"' in text, policy
