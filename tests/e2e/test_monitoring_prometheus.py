"""A real Prometheus (Debian's binary, its own configuration in a temporary folder, a free port)
scrapes the running system with the shipped scrape jobs and rules: every rule loads and
evaluates with health "ok", and every series of our own services that an alert names is there.

The shipped jobs (deploy/monitoring/prometheus.yaml) find pods by Kubernetes discovery, which
Debian's build lacks and a test has no cluster for: each job keeps its name and settings, its
discovery swapped for the running services' admin ports. The `nats` job has no target here:
the prometheus-nats-exporter sidecar is not part of the test system (it is a Go binary from no
registry this project installs from), so its series, like kube-state-metrics' and the
kubelet's, are absent; the test says so rather than pretending otherwise.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from jobs_testkit.promql import EXTERNAL, selectors
from jobs_testkit.servers import free_port
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

from .test_monitoring_metrics import run_a_job_and_refuse_a_webhook

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
SCRAPE_CONFIG = MONITORING / "prometheus.yaml"
ALERTS = MONITORING / "alerts.yaml"
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
# Fast enough for a test: the shipped 30 s would make it minutes.
INTERVAL = "1s"


@dataclass(frozen=True)
class Prometheus:
    url: str
    jobs: dict[str, int | None]  # scrape job -> the admin port scraped (None: no target here)


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin")
    if found is None:
        pytest.fail("prometheus is missing: `make prerequisites` installs Debian's prometheus")
    return found


def adapted_config(stack: Stack, rules: Path) -> tuple[dict[str, Any], dict[str, int | None]]:
    """The shipped configuration with each job's pod discovery swapped for static targets."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    p = stack.ports
    ports = {
        "gateway": p.gateway_admin,
        "webhook-ingest": p.webhook_ingest_admin,
        "ai-runner": p.ai_runner_admin,
        "job-store": p.job_store_admin,
    }
    jobs: dict[str, int | None] = {}
    for job in config["scrape_configs"]:
        name = job["job_name"]
        del job["kubernetes_sd_configs"], job["relabel_configs"]
        port = ports.get(name)
        jobs[name] = port
        targets = [f"127.0.0.1:{port}"] if port is not None else []
        # The labels the relabelling sets from the pod.
        labels = {"namespace": "ai-jobs", "pod": f"{name}-0"}
        job["static_configs"] = [{"targets": targets, "labels": labels}]
        job["scrape_interval"] = INTERVAL
    config["global"] = {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL}
    config["rule_files"] = [str(rules)]
    return config, jobs


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    folder = tmp_path_factory.mktemp("prometheus")
    rules = folder / "alerts.yaml"
    shutil.copyfile(ALERTS, rules)
    config, jobs = adapted_config(stack, rules)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield Prometheus(f"http://127.0.0.1:{port}", jobs)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def _api(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    answer = await client.get(f"/api/v1/{path}", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "success", body
    return body["data"]


def own_alert_metrics() -> dict[str, list[str]]:
    """Each metric of our own services an alert names, with the alerts naming it."""
    named: dict[str, list[str]] = {}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            for selector in selectors(rule["expr"]):
                if selector.name not in EXTERNAL:
                    named.setdefault(selector.name, []).append(rule["alert"])
    return named


@dataclass
class Seen:
    """What Prometheus answered once the system ran a job."""

    rules: list[dict[str, Any]]
    up: dict[str, str]
    series: dict[str, bool]
    metadata: set[str]
    targets: dict[str, tuple[str, str]]  # job -> (health, last error)


async def _run_a_job_and_ask(stack: Stack, token: str, prometheus: Prometheus) -> Seen:
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as client:

        async def ready() -> bool:
            try:
                return (await client.get("/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, within=30, what="Prometheus ready")

        async def up() -> dict[str, str]:
            found = await _api(client, "query", query="up")
            return {sample["metric"]["job"]: sample["value"][1] for sample in found["result"]}

        async def all_up() -> bool:
            scraped = [job for job, port in prometheus.jobs.items() if port is not None]
            now = await up()
            return all(now.get(job) == "1" for job in scraped)

        await eventually(all_up, within=20, what="every service target scraped")

        await run_a_job_and_refuse_a_webhook(stack, token)

        async def scraped_after_the_job() -> bool:
            # Each target is scraped on its own schedule: wait for the gateway's and
            # webhook-ingest's scrapes that followed the job and the refused webhook.
            for query in (
                'gateway_http_requests_total{method="POST",status="202"}',
                'webhook_ingest_http_requests_total{status="401"}',
            ):
                if not (await _api(client, "query", query=query))["result"]:
                    return False
            return True

        await eventually(scraped_after_the_job, within=20, what="scrapes after the job")

        async def evaluated() -> bool:
            groups = (await _api(client, "rules", type="alert"))["groups"]
            return all(r["health"] != "unknown" for g in groups for r in g["rules"])

        await eventually(evaluated, within=20, what="every rule evaluated once")
        groups = (await _api(client, "rules", type="alert"))["groups"]
        series = {}
        for name in [*own_alert_metrics(), *sorted(EXTERNAL)]:
            found = await _api(client, "series", **{"match[]": name})
            series[name] = bool(found)
        metadata = set(await _api(client, "metadata"))
        targets = (await _api(client, "targets"))["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
        return Seen([r for g in groups for r in g["rules"]], await up(), series, metadata, health)


@pytest.fixture(scope="module")
def seen(stack: Stack, token: str, prometheus: Prometheus) -> Seen:
    # Once per module, outside the tests' event loops (as the stack fixture runs its setup).
    return asyncio.run(_run_a_job_and_ask(stack, token, prometheus))


def test_every_shipped_rule_loads_and_evaluates(seen: Seen) -> None:
    shipped = [
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    ]
    assert sorted(r["name"] for r in seen.rules) == sorted(shipped)
    unhealthy = [(r["name"], r["health"], r.get("lastError")) for r in seen.rules]
    assert [u for u in unhealthy if u[1] != "ok"] == []


def test_every_service_target_is_up(seen: Seen, prometheus: Prometheus) -> None:
    scraped = {job for job, port in prometheus.jobs.items() if port is not None}
    assert scraped == {"gateway", "webhook-ingest", "ai-runner", "job-store"}
    assert {job: seen.up.get(job) for job in scraped} == dict.fromkeys(scraped, "1"), seen.targets
    # The NATS exporter's job is configured but has no target here (see the module's doc).
    assert prometheus.jobs["nats"] is None
    assert "nats" not in seen.up


def present(name: str, seen: Seen) -> bool:
    """A series of `name`, or its family in the scraped metadata: a counter with labels and no
    child yet (nothing parked, no retry) exports its family and no sample."""
    if seen.series.get(name):
        return True
    family = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
    return name in seen.metadata or family in seen.metadata


def test_every_own_metric_an_alert_names_is_scraped(seen: Seen) -> None:
    named = own_alert_metrics()
    assert "gateway_http_requests_total" in named
    assert "job_store_jobs_past_deadline" in named
    missing = {name: alerts for name, alerts in named.items() if not present(name, seen)}
    assert missing == {}
    # What one job leaves behind: the gateway's RED counter and the stuck-jobs gauge have
    # samples, not only a declaration.
    assert seen.series["gateway_http_requests_total"]
    assert seen.series["job_store_jobs_past_deadline"]


def test_the_external_exporters_series_are_not_here(seen: Seen) -> None:
    # No NATS exporter, kube-state-metrics or kubelet in a test run: their series are absent,
    # which is why deploy/tests/test_deploy_alerts.py checks their names against lists.
    assert seen.series["up"]
    assert [n for n in EXTERNAL - {"up"} if seen.series[n]] == []
