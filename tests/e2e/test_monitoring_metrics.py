"""The Grafana dashboard and the alert rules ask only for series the services really export: every
service runs as a process, a job runs through and a webhook is refused, then each admin port's
`/metrics` is read and every metric (and grouping label) the queries name is looked up in it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from jobs_testkit.promql import EXTERNAL
from jobs_testkit.stack import Stack

from .test_job_flow import job_until, submit

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
DASHBOARD = MONITORING / "dashboard.json"
ALERTS = MONITORING / "alerts.yaml"
# Series of the prometheus-nats-exporter sidecar (`-jsz=all`), not of a service; the test kit
# (`jobs_testkit.promql.EXTERNAL`) lists them with the other exporters' the alerts use.
NATS_EXPORTER_PREFIX = "jetstream_"
# Exported by the job-store once issue 21's job-store branch is merged: until its source defines
# the counter, the one name the dashboard may ask for ahead of it. The exemption ends by itself.
SPEND = "jobs_spend_usd_total"
JOB_STORE_SOURCE = ROOT / "services" / "job-store" / "src"

# PromQL words that are not metric names: functions, aggregations, operators and modifiers.
_KEYWORDS = frozenset(
    {
        "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
        "count_values", "group", "by", "without", "on", "ignoring", "group_left",
        "group_right", "and", "or", "unless", "bool", "offset", "rate", "irate", "increase",
        "delta", "idelta", "deriv", "changes", "resets", "histogram_quantile", "abs", "ceil",
        "floor", "round", "clamp_min", "clamp_max", "vector", "scalar", "time", "absent",
        "label_replace", "label_join", "sort", "sort_desc", "avg_over_time", "max_over_time",
        "min_over_time", "sum_over_time", "count_over_time", "last_over_time",
        "humanize", "humanizePercentage", "inf", "nan",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what remains once strings, label matchers,
    ranges, grouping clauses, numbers, functions and keywords are taken out."""
    rest = _RANGE.sub(" ", _MATCHERS.sub(" ", _STRING.sub('""', expr)))
    rest = _GROUPING.sub(" ", rest)
    names = set()
    for match in _IDENT.finditer(rest):
        name = match.group()
        called = rest[match.end() :].lstrip().startswith("(")
        if name in _KEYWORDS or called or name.startswith("__"):
            continue
        names.add(name)
    return names


def grouping_labels(expr: str) -> set[str]:
    found: set[str] = set()
    for labels in _GROUPING.findall(expr):
        found.update(label.strip() for label in labels.split(",") if label.strip())
    return found


def test_the_parser_finds_metric_names() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le) (rate(job_store_time_to_result_seconds_bucket"
        '{job_type="x", reason=~"a|b"}[$__rate_interval]))) / on() max(job_store_consumer_lag)'
        " > 3 and sum(increase(jobs_spend_usd_total[1d])) > 100"
    )
    assert metric_names(expr) == {
        "job_store_time_to_result_seconds_bucket",
        "job_store_consumer_lag",
        "jobs_spend_usd_total",
    }
    assert grouping_labels(expr) == {"le"}


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, rows' nested panels included."""
    panels: list[dict[str, Any]] = json.loads(DASHBOARD.read_text())["panels"]
    for panel in panels:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def alert_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["alert"], rule["expr"]


@dataclass
class Exported:
    """What the services' `/metrics` say: each sample name with the label names seen on it, and
    every name a declared metric can have samples under (a labelled metric with no child yet
    still declares itself)."""

    samples: dict[str, set[str]] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)

    def add(self, text: str) -> None:
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created"),
        }
        for family in text_string_to_metric_families(text):
            self.declared.update(family.name + s for s in suffixes.get(family.type, ("",)))
            for sample in family.samples:
                self.samples.setdefault(sample.name, set()).update(sample.labels)


def spend_counter_defined() -> bool:
    source = "\n".join(p.read_text() for p in JOB_STORE_SOURCE.rglob("*.py"))
    return re.search(r'Counter\(\s*"jobs_spend_usd', source) is not None


async def run_a_job_and_refuse_a_webhook(stack: Stack, token: str) -> None:
    """What leaves a sample in most series: one job through the whole system, and an unsigned
    webhook (a rejection by reason, a `401` by route and status)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as gateway,
        httpx.AsyncClient(base_url=stack.simulator_url) as simulator,
    ):
        await simulator.put("/_sim/config", json={"latencyS": 0.3})
        job_id = await submit(gateway)
        await job_until(gateway, job_id, {"succeeded"})
        await simulator.post("/_sim/reset")
    async with httpx.AsyncClient() as client:
        refused = await client.post(stack.webhook_url, json={"id": "x"})
        assert refused.status_code == 401, refused.text


async def _run_and_scrape(stack: Stack, token: str) -> Exported:
    await run_a_job_and_refuse_a_webhook(stack, token)
    async with httpx.AsyncClient() as client:
        found = Exported()
        p = stack.ports
        for port in (p.gateway_admin, p.webhook_ingest_admin, p.ai_runner_admin, p.job_store_admin):
            answer = await client.get(f"http://127.0.0.1:{port}/metrics")
            assert answer.status_code == 200
            found.add(answer.text)
    return found


@pytest.fixture(scope="module")
def exported(stack: Stack, token: str) -> Exported:
    # Once per module, outside the tests' event loops (as the stack fixture runs its setup).
    return asyncio.run(_run_and_scrape(stack, token))


def check(what: str, expr: str, exported: Exported) -> list[str]:
    """What `expr` asks for that no service exports (empty when all is there)."""
    missing = []
    names = metric_names(expr)
    for name in names:
        if name.startswith(NATS_EXPORTER_PREFIX) or name in EXTERNAL:
            continue
        if name == SPEND and not spend_counter_defined():
            continue  # see SPEND
        if name not in exported.declared and name not in exported.samples:
            missing.append(f"{what}: {name} not exported")
    # Grouping labels exist on the series they group (when the series has samples yet).
    with_samples = [exported.samples[n] for n in names if n in exported.samples]
    for label in grouping_labels(expr):
        if with_samples and not any(label in labels for labels in with_samples):
            missing.append(f"{what}: no series of {sorted(names)} has label {label}")
    return missing


def test_every_dashboard_query_names_exported_series(exported: Exported) -> None:
    queries = list(dashboard_queries())
    assert len(queries) >= 10
    missing = [m for title, expr in queries for m in check(title, expr, exported)]
    assert missing == []
    # The check can fail: a name no service exports, a label no series has.
    assert check("control", "rate(no_such_metric_total[5m])", exported)
    assert check("control", "sum by (nope) (rate(gateway_jobs_admitted_total[5m]))", exported)


def test_every_alert_names_exported_series(exported: Exported) -> None:
    missing = [m for alert, expr in alert_queries() for m in check(alert, expr, exported)]
    assert missing == []


def test_what_a_job_and_a_refused_webhook_leave_behind(exported: Exported) -> None:
    """The series the dashboard's main panels draw have samples once a job ran."""
    samples = exported.samples
    assert {"job_type"} <= samples["gateway_jobs_admitted_total"]
    assert {"job_type", "status", "le"} <= samples["job_store_time_to_result_seconds_bucket"]
    assert "reason" in samples["webhook_ingest_webhooks_total"]
    if spend_counter_defined():
        assert "job_type" in samples[SPEND]


def test_the_dashboard_covers_what_operators_asked_for() -> None:
    exprs = [expr for _, expr in dashboard_queries()]
    needles = {
        "throughput": "gateway_jobs_admitted_total",
        "jobs ended": "job_store_time_to_result_seconds_count",
        "time to result": "job_store_time_to_result_seconds_bucket",
        "stuck jobs": "ai_runner_reconciled_total",
        "webhook rejections": "webhook_ingest_webhooks_total",
        "spend": SPEND,
    }
    for what, needle in needles.items():
        assert any(needle in expr for expr in exprs), what
    spend = [expr for expr in exprs if SPEND in expr]
    assert any("by (job_type)" in expr for expr in spend)
