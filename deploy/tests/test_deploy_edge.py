"""The public edge: the Ingress (ingress-nginx, with its cert-manager issuer) the prod overlay
renders, the Gateway API HTTPRoute its gateway-api component renders instead, and access logs
without query strings (the event routes take a token as `?access_token=`).

The Gateway API's CRDs are not in kubernetes-validate's schemas, and the release's CRD file is
far too large to vendor: the HTTPRoute is checked against `HTTPROUTE_SCHEMA`, the subset of the
`gateway.networking.k8s.io/v1` HTTPRoute CRD (standard channel, v1.2) this route uses, strict
as the API server is (no unknown fields), with the CRD's patterns and its CEL rule on timeouts.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]

from .conftest import DEPLOY, PROD_WITH_COMPONENTS, Obj, Rendered

# GEP-2257 durations, as the CRD's pattern has them.
DURATION = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME = {"type": "string", "minLength": 1, "maxLength": 253}


def _strict(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


HTTPROUTE_SCHEMA: dict[str, Any] = _strict(
    {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object"},
        "spec": _strict(
            {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": _strict(
                        {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "namespace": {"type": "string", "maxLength": 63},
                            "name": NAME,
                            "sectionName": {"type": "string", "maxLength": 253},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                        ["name"],
                    ),
                },
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {"type": "string", "pattern": HOSTNAME, "maxLength": 253},
                },
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": _strict(
                        {
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": _strict(
                                    {
                                        "path": _strict(
                                            {
                                                "type": {
                                                    "enum": [
                                                        "Exact",
                                                        "PathPrefix",
                                                        "RegularExpression",
                                                    ]
                                                },
                                                "value": {
                                                    "type": "string",
                                                    "pattern": "^/",
                                                    "maxLength": 1024,
                                                },
                                            }
                                        )
                                    }
                                ),
                            },
                            "backendRefs": {
                                "type": "array",
                                "maxItems": 16,
                                "items": _strict(
                                    {
                                        "group": {"type": "string"},
                                        "kind": {"type": "string"},
                                        "name": NAME,
                                        "namespace": {"type": "string"},
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                        "weight": {"type": "integer", "minimum": 0},
                                    },
                                    ["name"],
                                ),
                            },
                            "timeouts": _strict(
                                {
                                    "request": {"type": "string", "pattern": DURATION},
                                    "backendRequest": {"type": "string", "pattern": DURATION},
                                }
                            ),
                        }
                    ),
                },
            },
        ),
    },
    ["apiVersion", "kind", "metadata", "spec"],
)


def seconds(duration: str) -> float:
    """A GEP-2257 duration in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)", duration))


def validate_http_route(route: Obj) -> None:
    """The CRD's schema (the subset above) and its rules that a schema cannot say."""
    jsonschema.validate(route, HTTPROUTE_SCHEMA)
    for rule in route["spec"]["rules"]:
        timeouts = rule.get("timeouts", {})
        # CEL: backendRequest within request, unless request is 0s (none).
        if "request" in timeouts and "backendRequest" in timeouts:
            request = seconds(timeouts["request"])
            assert request == 0 or seconds(timeouts["backendRequest"]) <= request
        for ref in rule["backendRefs"]:
            # A Service needs its port (the CRD's CEL rule).
            assert ref.get("group", "") == ""
            assert ref.get("kind", "Service") == "Service"
            assert "port" in ref


def service_port(r: Rendered, service: str, name: str) -> int:
    (port,) = [p["port"] for p in r.get("Service", service)["spec"]["ports"] if p["name"] == name]
    return int(port)


def webhook_host(r: Rendered) -> str:
    runner = r.get("Deployment", "ai-runner")["spec"]["template"]["spec"]["containers"][0]
    url = r.environment(runner)["REPLICATE_WEBHOOK_URL"]
    assert url.startswith("https://")
    assert urlsplit(url).path == "/api/webhooks/replicate"
    return urlsplit(url).netloc


def webhook_max_bytes(r: Rendered) -> int:
    ingest = r.get("Deployment", "webhook-ingest")["spec"]["template"]["spec"]["containers"][0]
    return int(r.environment(ingest)["WEBHOOK_MAX_BYTES"])


def test_one_ingress_with_one_certificate_routes_the_public_paths(
    rendered: dict[str, Rendered],
) -> None:
    r = rendered["prod"]
    (ingress,) = r.of_kind("Ingress")
    annotations = ingress["metadata"]["annotations"]
    # cert-manager issues and renews the certificate of this one Ingress (no hand-made Secret
    # shared between Ingresses).
    assert annotations["cert-manager.io/cluster-issuer"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [rule["host"]]
    assert tls["secretName"]
    # Replicate is told to call this host.
    assert rule["host"] == webhook_host(r)
    routes = {
        p["path"]: (p["pathType"], p["backend"]["service"]["name"], p["backend"]["service"]["port"])
        for p in rule["http"]["paths"]
    }
    assert routes == {
        "/api/webhooks/": ("Prefix", "webhook-ingest", {"name": "http"}),
        "/": ("Prefix", "gateway", {"name": "http"}),
    }
    # SSE through ingress-nginx: unbuffered, HTTP/1.1 upstream, streams held open for long.
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert annotations["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    # The webhook body limit is webhook-ingest's own (it answers the 413, at least 10 MiB).
    limit = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert limit.endswith("m")
    assert int(limit[:-1]) * 1024 * 1024 > webhook_max_bytes(r)


def test_the_gateway_api_component_routes_the_same_paths(rendered: dict[str, Rendered]) -> None:
    r = rendered[PROD_WITH_COMPONENTS]
    assert r.of_kind("Ingress") == []  # one edge at a time
    (route,) = r.of_kind("HTTPRoute")
    validate_http_route(route)
    spec = route["spec"]
    (parent,) = spec["parentRefs"]
    assert parent["kind"] == "Gateway"
    assert parent["name"]
    assert parent["namespace"]
    assert spec["hostnames"] == [webhook_host(r)]
    routes: dict[str, tuple[str, int, dict[str, str]]] = {}
    for rule in spec["rules"]:
        (backend,) = rule["backendRefs"]
        for match in rule["matches"]:
            assert match["path"]["type"] == "PathPrefix"
            routes[match["path"]["value"]] = (backend["name"], backend["port"], rule["timeouts"])
    assert {path: (name, port) for path, (name, port, _) in routes.items()} == {
        "/api/webhooks/": ("webhook-ingest", service_port(r, "webhook-ingest", "http")),
        "/": ("gateway", service_port(r, "gateway", "http")),
    }
    # Event streams never end by themselves: no limit on a request's length (Envoy's default
    # of 15 s would cut every one).
    assert seconds(routes["/"][2]["request"]) == 0
    # A webhook's body arrives within WEBHOOK_READ_TIMEOUT_S; its answer follows a publish.
    ingest = r.get("Deployment", "webhook-ingest")["spec"]["template"]["spec"]["containers"][0]
    read_timeout = float(r.environment(ingest)["WEBHOOK_READ_TIMEOUT_S"])
    assert seconds(routes["/api/webhooks/"][2]["request"]) >= 2 * read_timeout


def test_the_structural_check_refuses_what_the_api_server_would() -> None:
    route = yaml.safe_load((DEPLOY / "components" / "gateway-api" / "httproute.yaml").read_text())
    validate_http_route(route)
    spec = route["spec"]
    misspelt = {**spec, "rule": spec["rules"]}
    bad_timeout = {**spec, "rules": [{**spec["rules"][0], "timeouts": {"request": "1 hour"}}]}
    unnamed_parent = {**spec, "parentRefs": [{"namespace": "gateway-system"}]}
    for broken_spec in (misspelt, bad_timeout, unnamed_parent):
        broken = {**route, "spec": broken_spec}
        try:
            validate_http_route(broken)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"accepted: {broken['spec']}")


def test_no_edge_access_log_writes_a_query_string(rendered: dict[str, Rendered]) -> None:
    """ingress-nginx's default access log writes `$request`, query string and all: the shipped
    Ingress logs nothing (the services log requests themselves, path only); the controller-wide
    format offered instead, and Envoy Gateway's for the Gateway API, name no variable that holds
    the query string."""
    (ingress,) = rendered["prod"].of_kind("Ingress")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/enable-access-log"] == (
        "false"
    )
    nginx = yaml.safe_load((DEPLOY / "examples" / "ingress-nginx-log-format.yaml").read_text())
    log_format = nginx["data"]["log-format-upstream"]
    assert "$uri" in log_format
    for variable in ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_"):
        assert variable not in log_format, variable

    envoy = yaml.safe_load((DEPLOY / "examples" / "envoy-gateway-access-log.yaml").read_text())
    assert envoy["kind"] == "EnvoyProxy"
    (setting,) = envoy["spec"]["telemetry"]["accessLog"]["settings"]
    text = setting["format"]["text"]
    assert "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%" in text
    # Every other way Envoy writes the path keeps the query.
    without = text.replace("%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%", "")
    for operator in (":PATH)", "%PATH", "X-ENVOY-ORIGINAL-PATH"):
        assert operator not in without, operator
