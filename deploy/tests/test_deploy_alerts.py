"""The Prometheus alert rules: valid to `promtool check rules`, the same in the rules file and the
PrometheusRule example, covering what pages an on-call engineer, each with its runbook section,
and naming only series that exist: the services' own metrics (found in their source) or those
of the external exporters the test kit lists (`jobs_testkit.promql`). Expressions are read by
a PromQL parser, not patterns."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from jobs_testkit.promql import EXTERNAL, selectors

from .conftest import DEPLOY, ROOT

ALERTS = DEPLOY / "monitoring" / "alerts.yaml"
RULE_EXAMPLE = DEPLOY / "examples" / "prometheusrule.yaml"
RUNBOOK = DEPLOY / "RUNBOOK.md"
RUNBOOK_PREFIX = "deploy/RUNBOOK.md#"
# The scrape jobs (deploy/monitoring/prometheus.yaml, the PodMonitors' `jobLabel`).
SERVICE_JOBS = ("gateway", "webhook-ingest", "ai-runner", "job-store")
JOBS = (*SERVICE_JOBS, "nats")

# prometheus_client exposes a Counter `x` as `x_total`, a Histogram as `x_bucket` and the like.
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
# Labels whose values the services set in code: a value a rule filters on must be one of them.
CHECKED_LABELS = ("reason", "outcome", "stage")
SOURCES = [ROOT / "runtime" / "src", *(ROOT / "services").glob("*/src")]


def rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported_metrics() -> dict[str, str]:
    """Each metric name the services define, with the source text of its package."""
    found: dict[str, str] = {}
    for source in SOURCES:
        text = "\n".join(p.read_text() for p in source.rglob("*.py"))
        for name in re.findall(r"(?:Counter|Gauge|Histogram|Summary)\(\s*\"(\w+)\"", text):
            found[name] = text
    return found


def unknown_series(expr: str, exported: dict[str, str]) -> list[str]:
    """What `expr` selects that nothing exports, and label values no owning service sets."""
    problems = []
    for selector in selectors(expr):
        if selector.name in EXTERNAL:
            continue
        base = next(
            (selector.name[: -len(s)] for s in SUFFIXES if selector.name.endswith(s)),
            selector.name,
        )
        if base not in exported:
            problems.append(f"{selector.name} is exported by nothing known")
            continue
        for label, op, values in selector.matchers:
            if label not in CHECKED_LABELS or op not in ("Equal", "Re"):
                continue
            for value in values.split("|"):
                if f'"{value}"' not in exported[base]:
                    problems.append(f"{selector.name}: no service sets {label}={value}")
    return problems


def promtool() -> str:
    found = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if found is None:
        pytest.fail("promtool is missing: `make prerequisites` installs Debian's prometheus")
    return found


def runbook_sections() -> set[str]:
    """The anchors of deploy/RUNBOOK.md's headings, as GitHub makes them (for one-word ones)."""
    headings = re.findall(r"^#{2,3} (\S+)\s*$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {heading.lower() for heading in headings}


def test_promtool_accepts_the_rules_file_and_the_example(tmp_path: Path) -> None:
    spec = yaml.safe_load(RULE_EXAMPLE.read_text())["spec"]
    example = tmp_path / "prometheusrule-spec.yaml"
    example.write_text(yaml.safe_dump({"groups": spec["groups"]}))
    for path in (ALERTS, example):
        done = subprocess.run(
            [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    # The check above can fail: a bad expression is refused.
    broken = tmp_path / "broken.yaml"
    rule = {"alert": "Broken", "expr": "sum(rate(x_total[5m])"}
    broken.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    done = subprocess.run([promtool(), "check", "rules", str(broken)], capture_output=True)
    assert done.returncode != 0


def test_the_example_holds_the_same_rules() -> None:
    example = yaml.safe_load(RULE_EXAMPLE.read_text())
    assert example["kind"] == "PrometheusRule"
    assert example["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_every_rule_is_actionable() -> None:
    # One alert name may have several rules (TargetAbsent, one per job), told apart by labels.
    keys = [(rule["alert"], tuple(sorted(rule["labels"].items()))) for rule in rules()]
    assert len(keys) == len(set(keys))
    sections = runbook_sections()
    for rule in rules():
        assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        assert annotations["description"], rule["alert"]
        url = annotations["runbook_url"]
        assert url == RUNBOOK_PREFIX + rule["alert"].lower(), rule["alert"]
        assert url.removeprefix(RUNBOOK_PREFIX) in sections, rule["alert"]


def test_what_the_issue_asks_to_page_on_is_covered() -> None:
    by_name: dict[str, list[str]] = {}
    for rule in rules():
        by_name.setdefault(rule["alert"], []).append(rule["expr"])

    def selected(alert: str) -> set[str]:
        return {s.name for expr in by_name[alert] for s in selectors(expr)}

    # A target down, and every job's absence, each a rule of its own.
    assert "up" in selected("TargetDown")
    assert "== 0" in by_name["TargetDown"][0]
    assert sorted(by_name["TargetAbsent"]) == sorted(f'absent(up{{job="{j}"}})' for j in JOBS)
    covered = {
        "NatsServerDown": "jetstream_server_jetstream_disabled",
        "JetStreamDisabled": "jetstream_server_jetstream_disabled",
        "JetStreamNoMetaLeader": "jetstream_server_jetstream_disabled",
        "JetStreamStorageHigh": "jetstream_server_max_storage",
        "PersistentVolumeFilling": "kubelet_volume_stats_used_bytes",
        "ContainerOOMKilled": "kube_pod_container_status_last_terminated_reason",
        "GatewayErrors": "gateway_http_requests_total",
        "JobsStuck": "job_store_jobs_past_deadline",
        "JobEventsParked": "job_store_parked_total",
        "JobsConsumerLag": "jetstream_consumer_num_pending",
        "JobsOldestUnackedStuck": "jetstream_consumer_ack_floor_stream_seq",
        "WebhookSignaturesFailing": "webhook_ingest_webhooks_total",
        "ReplicateThrottling": "ai_runner_create_retries_total",
        "ReplicateErrors": "ai_runner_create_retries_total",
        "ReconcileBacklogNearDataLimit": "ai_runner_reconciled_total",
        "OrphanPredictions": "ai_runner_orphans_canceled_total",
        "DailySpendHigh": "jobs_spend_usd_total",
    }
    for alert, metric in covered.items():
        assert metric in selected(alert), alert
    # The ingress 5xx are the gateway's own answers by status class.
    (errors,) = by_name["GatewayErrors"]
    statuses = {m for s in selectors(errors) for m in s.matchers if m[0] == "status"}
    assert statuses == {("status", "Re", "5..")}


def test_rules_name_only_series_that_exist() -> None:
    exported = exported_metrics()
    problems = [f"{r['alert']}: {p}" for r in rules() for p in unknown_series(r["expr"], exported)]
    assert problems == []


def test_the_check_reads_expressions_as_prometheus_does() -> None:
    exported = exported_metrics()
    expr = (
        'max by (le) (rate(job_store_parked_total{reason="x{y}"}[5m] offset 1h)) / on ()'
        " max_over_time(no_such_metric[1h:5m]) unless absent(up) and -bogus_total"
    )
    assert {s.name for s in selectors(expr)} == {
        "job_store_parked_total",
        "no_such_metric",
        "up",
        "bogus_total",
    }
    assert unknown_series(expr, exported) == [
        "job_store_parked_total: no service sets reason=x{y}",
        "no_such_metric is exported by nothing known",
        "bogus_total is exported by nothing known",
    ]
    with pytest.raises(ValueError, match=r".+"):
        selectors("sum(rate(x[5m])")


def test_every_scrape_job_has_a_target_alert() -> None:
    # The jobs the alerts name are the scrape config's, which the PodMonitors' tests match.
    config = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yaml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == list(JOBS)
    (down,) = [rule["expr"] for rule in rules() if rule["alert"] == "TargetDown"]
    ((_, _, jobs),) = [m for s in selectors(down) for m in s.matchers if m[0] == "job"]
    assert sorted(jobs.split("|")) == sorted(JOBS)


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
