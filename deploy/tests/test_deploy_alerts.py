"""The Prometheus alert rules: well formed, the same in the rules file and the PrometheusRule
example, covering what pages an on-call engineer, and naming only series that exist (the
services' own metrics, found in their source, or the NATS exporter's)."""

from __future__ import annotations

import re
from typing import Any

import yaml  # type: ignore[import-untyped]

from .conftest import DEPLOY, ROOT

ALERTS = DEPLOY / "monitoring" / "alerts.yaml"
RULE_EXAMPLE = DEPLOY / "examples" / "prometheusrule.yaml"
# Series of prometheus-nats-exporter with `-jsz=all` (labels stream_name, consumer_name).
NATS_EXPORTER = {
    "jetstream_consumer_num_pending",
    "jetstream_consumer_num_ack_pending",
    "jetstream_consumer_num_redelivered",
    "jetstream_consumer_ack_floor_stream_seq",
    "jetstream_consumer_delivered_stream_seq",
    "jetstream_stream_total_messages",
}
# prometheus_client exposes a Counter `x` as `x_total`, a Histogram as `x_bucket` and the like.
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
METRIC = re.compile(r"\b((?:ai_runner|job_store|webhook_ingest|jobs_consumer|jetstream)_\w+)")
LABEL_VALUE = re.compile(r'\b(reason|outcome|stage)(=~|=|!=)"([^"]+)"')
SOURCES = [ROOT / "runtime" / "src", *(ROOT / "services").glob("*/src")]


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_metrics() -> dict[str, str]:
    """Each metric name the services define, with the source text of its package."""
    found: dict[str, str] = {}
    for source in SOURCES:
        text = "\n".join(p.read_text() for p in source.rglob("*.py"))
        for name in re.findall(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(\w+)\"", text):
            found[name] = text
    return found


def test_the_example_holds_the_same_rules() -> None:
    example = yaml.safe_load(RULE_EXAMPLE.read_text())
    assert example["kind"] == "PrometheusRule"
    assert example["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_every_rule_is_actionable() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        # Balanced parentheses and braces: a cheap stand-in for promtool, which is not here.
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")"), rule["alert"]
        assert expr.count("{") == expr.count("}"), rule["alert"]


def test_what_the_issue_asks_to_page_on_is_covered() -> None:
    by_name = {rule["alert"]: rule["expr"] for rule in rules()}
    covered = {
        "consumer lag": "jetstream_consumer_num_pending",
        "oldest unacked age": "jetstream_consumer_ack_floor_stream_seq",
        "webhook 401 spike": "bad_signature",
        "Replicate 429": 'reason="throttled"',
        "Replicate 5xx": "transient",
        "reconcile backlog": "ai_runner_reconciled_total",
        "parked events": "job_store_parked_total",
        "orphan predictions": "ai_runner_orphans_canceled_total",
        "daily spend": "jobs_spend_usd_total",
    }
    for what, needle in covered.items():
        assert any(needle in expr for expr in by_name.values()), what


def test_rules_name_only_series_that_exist() -> None:
    exported = exported_metrics()
    for rule in rules():
        expr = rule["expr"]
        owners = []
        for series in METRIC.findall(expr):
            if series.startswith("jetstream_"):
                assert series in NATS_EXPORTER, (rule["alert"], series)
                continue
            base = next((series[: -len(s)] for s in SUFFIXES if series.endswith(s)), series)
            assert base in exported, (rule["alert"], series)
            owners.append(exported[base])
        # A label value the rule filters on is one the owning service sets somewhere.
        for _, _, values in LABEL_VALUE.findall(expr):
            for value in values.split("|"):
                assert any(f'"{value}"' in text for text in owners), (rule["alert"], value)


def test_the_rules_file_is_loaded_by_name() -> None:
    # The README tells operators to load this very file; keep its path stable.
    readme = (DEPLOY / "README.md").read_text()
    assert "deploy/monitoring/alerts.yaml" in readme
    assert "deploy/examples/prometheusrule.yaml" in readme


def test_the_daily_spend_alert_compares_a_days_spend_with_a_threshold() -> None:
    # The job-store's counter of settled costs, in dollars, over a rolling day; the threshold is
    # the operator's (an example until set). tests/e2e/test_monitoring_metrics.py checks the
    # counter against what the running job-store exports.
    (rule,) = [rule for rule in rules() if rule["alert"] == "DailySpendHigh"]
    match = re.fullmatch(
        r"sum\(increase\(jobs_spend_usd_total\[1d\]\)\) > (\d+(?:\.\d+)?)", rule["expr"]
    )
    assert match is not None, rule["expr"]
    assert float(match.group(1)) > 0
    assert rule["labels"]["severity"] == "warning"
