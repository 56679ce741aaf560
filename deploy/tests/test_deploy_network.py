"""The NetworkPolicies of each overlay, evaluated as Kubernetes does: default deny in and out,
then only the flows the system needs (and a sample of flows it must not allow)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import OVERLAYS, PROD_WITH_COMPONENTS, Obj, Rendered

NAME = "app.kubernetes.io/name"
NAMESPACE = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Peer:
    """A pod (namespace and labels) or an address outside the cluster (`ip`)."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""


def app(name: str) -> Peer:
    return Peer(namespace="", labels={NAME: name})  # "" stands for the overlay's namespace


INGRESS_NGINX = Peer("ingress-nginx", {NAME: "ingress-nginx"})
# Envoy Gateway's proxies, the data plane of the gateway-api component's Gateway.
ENVOY_GATEWAY = Peer("envoy-gateway-system", {NAME: "envoy"})
PROMETHEUS = Peer("monitoring", {NAME: "prometheus"})
KUBE_DNS = Peer("kube-system", {"k8s-app": "kube-dns"})
OTHER_NAMESPACE = Peer("someone-else", {NAME: "gateway"})
REPLICATE = Peer(ip="52.5.120.10")  # a public address, as api.replicate.com resolves
METADATA = Peer(ip="169.254.169.254")  # the cloud's instance metadata endpoint
EXTERNAL_DATABASE = Peer(ip="10.20.0.5")
SERVICES = ("gateway", "webhook-ingest", "ai-runner", "job-store")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


class Network:
    """The overlay's policies; `allowed(a, b, port)` is whether a connection gets through."""

    def __init__(self, r: Rendered) -> None:
        (namespace,) = r.of_kind("Namespace")
        self.namespace = namespace["metadata"]["name"]
        self.policies = r.of_kind("NetworkPolicy")

    def _ns(self, peer: Peer) -> str:
        return peer.namespace or self.namespace

    def _peer_matches(self, rule_peer: Obj, peer: Peer) -> bool:
        if "ipBlock" in rule_peer:
            if not peer.ip:
                return False  # pod IPs are matched by selectors (as Cilium and Calico do)
            block = rule_peer["ipBlock"]
            address = ipaddress.ip_address(peer.ip)
            return address in ipaddress.ip_network(block["cidr"]) and not any(
                address in ipaddress.ip_network(e) for e in block.get("except", [])
            )
        if peer.ip:
            return False
        ns_selector = rule_peer.get("namespaceSelector")
        pod_selector = rule_peer.get("podSelector")
        if ns_selector is None:
            in_namespace = self._ns(peer) == self.namespace
        else:
            in_namespace = selects(ns_selector, {NAMESPACE: self._ns(peer)})
        return in_namespace and selects(pod_selector or {}, peer.labels)

    def _port_matches(self, rule: Obj, port: int, protocol: str) -> bool:
        ports = rule.get("ports")
        if not ports:
            return True
        return any(
            p.get("port", port) == port and p.get("protocol", "TCP") == protocol for p in ports
        )

    def _admits(self, direction: str, subject: Peer, other: Peer, port: int, protocol: str) -> bool:
        if subject.ip or self._ns(subject) != self.namespace:
            return True  # not governed by this namespace's policies
        policy_type = "Ingress" if direction == "ingress" else "Egress"
        relevant = [
            p
            for p in self.policies
            if policy_type in p["spec"]["policyTypes"]
            and selects(p["spec"]["podSelector"], subject.labels)
        ]
        if not relevant:
            return True
        peers_key = "from" if direction == "ingress" else "to"
        for policy in relevant:
            for rule in policy["spec"].get(direction, []):
                peers = rule.get(peers_key)
                if not self._port_matches(rule, port, protocol):
                    continue
                if not peers or any(self._peer_matches(p, other) for p in peers):
                    return True
        return False

    def allowed(self, source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
        return self._admits("egress", source, target, port, protocol) and self._admits(
            "ingress", target, source, port, protocol
        )


@pytest.fixture(params=[*OVERLAYS, PROD_WITH_COMPONENTS])
def network(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Network:
    return Network(rendered[request.param])


def test_default_deny_in_and_out(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        deny = r.get("NetworkPolicy", "default-deny")["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_what_the_system_needs_is_allowed(network: Network) -> None:
    for service in SERVICES:
        assert network.allowed(app(service), app("nats"), 4222), service
        assert network.allowed(app(service), KUBE_DNS, 53, "UDP"), service
        assert network.allowed(app(service), KUBE_DNS, 53, "TCP"), service
    for service, port in (("gateway", 9000), ("webhook-ingest", 9001), ("ai-runner", 9002)):
        assert network.allowed(PROMETHEUS, app(service), port), service
    assert network.allowed(PROMETHEUS, app("job-store"), 9003)
    assert network.allowed(PROMETHEUS, app("nats"), 7777)
    assert network.allowed(app("nats"), app("nats"), 6222)
    assert network.allowed(app("ai-runner"), REPLICATE, 443)
    assert network.allowed(app("gateway"), REPLICATE, 443)  # the JWKS host is on the internet


def test_everything_else_is_denied(network: Network) -> None:
    # Admin ports are never reachable from the ingress controller or other namespaces.
    assert not network.allowed(INGRESS_NGINX, app("gateway"), 9000)
    assert not network.allowed(INGRESS_NGINX, app("ai-runner"), 9002)
    assert not network.allowed(INGRESS_NGINX, app("nats"), 4222)
    assert not network.allowed(OTHER_NAMESPACE, app("nats"), 4222)
    assert not network.allowed(OTHER_NAMESPACE, app("job-store"), 9003)
    assert not network.allowed(PROMETHEUS, app("gateway"), 8000)
    # Services talk through NATS, not to each other.
    assert not network.allowed(app("gateway"), app("job-store"), 9003)
    assert not network.allowed(app("webhook-ingest"), app("ai-runner"), 9002)
    # Only the ai-runner (Replicate) and the gateway (JWKS) leave the cluster, on 443 only.
    for service in ("webhook-ingest", "job-store"):
        assert not network.allowed(app(service), REPLICATE, 443), service
    assert not network.allowed(app("ai-runner"), REPLICATE, 80)
    assert not network.allowed(app("ai-runner"), METADATA, 443)
    assert not network.allowed(app("nats"), REPLICATE, 443)


def test_the_ingress_controller_reaches_the_public_ports_in_prod_only(
    rendered: dict[str, Rendered],
) -> None:
    dev, prod = Network(rendered["dev"]), Network(rendered["prod"])
    assert prod.allowed(INGRESS_NGINX, app("gateway"), 8000)
    assert prod.allowed(INGRESS_NGINX, app("webhook-ingest"), 8001)
    # Dev has no Ingress (its secrets are for development): nothing comes in that way.
    assert not dev.allowed(INGRESS_NGINX, app("gateway"), 8000)
    assert not dev.allowed(INGRESS_NGINX, app("webhook-ingest"), 8001)


def test_with_the_gateway_api_its_proxies_replace_the_ingress_controller(
    rendered: dict[str, Rendered],
) -> None:
    network = Network(rendered[PROD_WITH_COMPONENTS])
    assert network.allowed(ENVOY_GATEWAY, app("gateway"), 8000)
    assert network.allowed(ENVOY_GATEWAY, app("webhook-ingest"), 8001)
    assert not network.allowed(INGRESS_NGINX, app("gateway"), 8000)
    assert not network.allowed(INGRESS_NGINX, app("webhook-ingest"), 8001)
    # The admin ports stay unrouted, and only the proxies of that namespace get in.
    assert not network.allowed(ENVOY_GATEWAY, app("gateway"), 9000)
    assert not network.allowed(ENVOY_GATEWAY, app("nats"), 4222)
    assert not network.allowed(Peer("envoy-gateway-system", {NAME: "other"}), app("gateway"), 8000)
    assert not network.allowed(Peer("someone-else", {NAME: "envoy"}), app("gateway"), 8000)


def test_the_job_store_alone_reaches_postgres(rendered: dict[str, Rendered]) -> None:
    dev, prod = Network(rendered["dev"]), Network(rendered["prod"])
    assert dev.allowed(app("job-store"), app("postgres"), 5432)
    assert not dev.allowed(app("gateway"), app("postgres"), 5432)
    assert not dev.allowed(app("ai-runner"), app("postgres"), 5432)
    assert prod.allowed(app("job-store"), EXTERNAL_DATABASE, 5432)
    assert not prod.allowed(app("gateway"), EXTERNAL_DATABASE, 5432)
    assert not prod.allowed(app("job-store"), METADATA, 5432)


def test_the_simulator_stands_in_for_replicate_in_dev(rendered: dict[str, Rendered]) -> None:
    dev = Network(rendered["dev"])
    assert dev.allowed(app("ai-runner"), app("replicate-sim"), 8010)
    assert dev.allowed(app("replicate-sim"), app("webhook-ingest"), 8001)
    assert not dev.allowed(app("gateway"), app("replicate-sim"), 8010)
    assert not dev.allowed(app("replicate-sim"), REPLICATE, 443)


def test_the_evaluator_denies_what_no_policy_allows(rendered: dict[str, Rendered]) -> None:
    network = Network(rendered["prod"])
    network.policies = [p for p in network.policies if p["metadata"]["name"] == "default-deny"]
    assert not network.allowed(app("gateway"), app("nats"), 4222)
    assert not network.allowed(INGRESS_NGINX, app("gateway"), 8000)
    network.policies = []
    assert network.allowed(app("gateway"), app("nats"), 4222)
    assert network.allowed(app("job-store"), METADATA, 80)
