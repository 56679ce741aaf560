"""PromQL as Prometheus reads it, for the checks of the alert rules: the vector selectors of an
expression (by a real parser, not patterns), and the series that come from exporters outside
this code, listed by who exports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import promql_parser

# Series from outside the code, by who exports them: only those the rules use, named as in the
# exporter's source at the deployed version. None of them exists in a test run (no exporter,
# no cluster).
# prometheus-nats-exporter 0.16 with `-jsz=all` (collector/jsz.go): server series carry
# server_name, cluster, meta_leader, is_meta_leader; consumer series stream_name and
# consumer_name.
NATS_EXPORTER: Final = frozenset(
    {
        "jetstream_server_jetstream_disabled",
        "jetstream_server_total_message_bytes",
        "jetstream_server_max_storage",
        "jetstream_consumer_num_pending",
        "jetstream_consumer_num_ack_pending",
        "jetstream_consumer_ack_floor_stream_seq",
    }
)
# kube-state-metrics (kube-prometheus-stack ships it).
KUBE_STATE_METRICS: Final = frozenset(
    {"kube_pod_container_status_last_terminated_reason", "kube_pod_container_status_restarts_total"}
)
# The kubelet's volume statistics (kube-prometheus-stack's kubelet ServiceMonitor).
KUBELET: Final = frozenset(
    {"kubelet_volume_stats_used_bytes", "kubelet_volume_stats_capacity_bytes"}
)
# Prometheus itself: one per target and scrape.
PROMETHEUS: Final = frozenset({"up"})
EXTERNAL: Final = NATS_EXPORTER | KUBE_STATE_METRICS | KUBELET | PROMETHEUS


@dataclass(frozen=True)
class Selector:
    """One vector selector of an expression: its metric name and its label matchers."""

    name: str
    matchers: tuple[
        tuple[str, str, str], ...
    ]  # (label, "Equal" | "NotEqual" | "Re" | "NotRe", value)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in `expr`, those under ranges and subqueries included; a
    `ValueError` if `expr` is not PromQL."""
    found: list[Selector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = tuple(
                (m.name, str(m.op).rpartition(".")[2], m.value) for m in node.matchers.matchers
            )
            name = node.name or next((v for k, _, v in matchers if k == "__name__"), "")
            found.append(Selector(name, matchers))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found
