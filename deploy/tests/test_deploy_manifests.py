"""The rendered overlays: valid Kubernetes objects, and the properties the deployment promises
for every service (probes, limits, restricted security, graceful shutdown, scaling, disruption
budgets, the Ingress, NATS and Postgres per environment), with settings the services accept."""

from __future__ import annotations

import base64
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
from gateway.config import Settings as GatewaySettings
from job_store.config import MigrateSettings
from job_store.config import Settings as JobStoreSettings
from jobs_proto.permissions import render_deploy_authorization
from jobs_runtime.secrets import SecretKind, refusal
from jobs_runtime.settings import EnvSettings, load_settings
from jobs_testkit import cluster_secrets
from jobs_testkit.servers.tls import make_server_certificate
from replicate_sim.config import Settings as SimulatorSettings
from webhook_ingest.config import Settings as WebhookIngestSettings

from .conftest import DEPLOY, OVERLAYS, SERVICES, Obj, Rendered

SETTINGS: dict[str, type[EnvSettings]] = {
    "gateway": GatewaySettings,
    "webhook-ingest": WebhookIngestSettings,
    "ai-runner": AiRunnerSettings,
    "job-store": JobStoreSettings,
}
# The oldest Kubernetes these manifests claim to work on, and the newest schemas installed.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# What uvicorn gives requests in hand to finish after SIGTERM (jobs_runtime.http).
HTTP_GRACEFUL_CLOSE_S = 10


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


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes(
    rendered: dict[str, Rendered], overlay: str, version: str
) -> None:
    for obj in rendered[overlay].objects:
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

    # Graceful shutdown: endpoints drop the pod during the preStop sleep, then SIGTERM gives
    # the service SHUTDOWN_GRACE_S (and the HTTP listener its own close); the kubelet must wait
    # longer than all of it before SIGKILL.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    env = r.environment(container)
    drain = int(pre_stop[1]) + float(env["SHUTDOWN_GRACE_S"])
    if http_port is not None:
        drain += HTTP_GRACEFUL_CLOSE_S
    assert spec["terminationGracePeriodSeconds"] > drain

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


def test_ingress_routes_and_server_sent_events(rendered: dict[str, Rendered]) -> None:
    r = rendered["prod"]
    routes: dict[str, tuple[str, str, dict[str, str]]] = {}
    hosts = set()
    for ingress in r.of_kind("Ingress"):
        assert ingress["spec"]["ingressClassName"] == "nginx"
        annotations = ingress["metadata"].get("annotations", {})
        for rule in ingress["spec"]["rules"]:
            hosts.add(rule["host"])
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                routes[path["path"]] = (backend["name"], backend["port"]["name"], annotations)
                assert path["pathType"] == "Prefix"
        assert {h for t in ingress["spec"]["tls"] for h in t["hosts"]} == hosts
    assert len(hosts) == 1
    assert {p: (s, port) for p, (s, port, _) in routes.items()} == {
        "/api/webhooks/": ("webhook-ingest", "http"),
        "/api": ("gateway", "http"),
        "/": ("gateway", "http"),
    }
    # SSE through ingress-nginx: unbuffered, HTTP/1.1 upstream, streams held open for long.
    sse = routes["/api"][2]
    assert sse["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert sse["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
    assert int(sse["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    # The webhook body limit is webhook-ingest's own (it answers the 413, at least 10 MiB).
    limit = routes["/api/webhooks/"][2]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert limit.endswith("m")
    webhook_env = r.environment(main_container(deployment(r, "webhook-ingest"), "webhook-ingest"))
    assert int(limit[:-1]) * 1024 * 1024 > int(webhook_env["WEBHOOK_MAX_BYTES"])
    # Replicate is told to call this host.
    runner = r.environment(main_container(deployment(r, "ai-runner"), "ai-runner"))
    (host,) = hosts
    assert runner["REPLICATE_WEBHOOK_URL"] == f"https://{host}/api/webhooks/replicate"
    assert runner["REPLICATE_BASE_URL"] == "https://api.replicate.com"


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
    (folder / "postgres.env").unlink()
    assert cluster_secrets.write(folder)  # a partial set is remade whole, so it agrees
    again = {p.name: p.read_text() for p in folder.iterdir()}
    assert again.keys() == first.keys()
    assert again["job-store-database.env"] != first["job-store-database.env"]


# Dev has no Ingress at all (test_dev_has_no_public_entry).
@pytest.mark.parametrize("overlay", ["prod"])
def test_no_ingress_access_log_writes_a_query_string(
    rendered: dict[str, Rendered], overlay: str
) -> None:
    """The event routes take a token as `?access_token=`; ingress-nginx's default access log
    writes `$request`, query string and all. The gateway's Ingress logs nothing (the gateway
    logs requests itself, path only); the controller-wide format offered instead has no
    variable that holds the query string."""
    gateway = rendered[overlay].get("Ingress", "gateway")
    assert gateway["metadata"]["annotations"]["nginx.ingress.kubernetes.io/enable-access-log"] == (
        "false"
    )
    example = yaml.safe_load((DEPLOY / "examples" / "ingress-nginx-log-format.yaml").read_text())
    log_format = example["data"]["log-format-upstream"]
    assert "$uri" in log_format
    for variable in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_"):
        assert variable not in log_format, variable


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

    kustomizations = "".join(p.read_text() for p in DEPLOY.rglob("kustomization.yaml"))
    assert "examples" not in kustomizations
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
