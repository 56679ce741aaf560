"""The gateways' rolling restart in short: clients behind one front watch every job's events
and read its output while each gateway is replaced in turn; every watcher sees its job's end,
no job is lost, and every stopped gateway exits 0 within the manifest's budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs_chaos.rollout import ROLLOUT, manifest_budget
from jobs_chaos.run import run_all
from jobs_chaos.scenarios import SIZES
from jobs_chaos.system import REPLICAS


@pytest.mark.timeout(120)
async def test_gateway_rollout_short(tmp_path: Path) -> None:
    outcome = await run_all(tmp_path / "system", SIZES["short"], [ROLLOUT])
    report = outcome.table + "\n" + "\n".join(outcome.problems())
    (row,) = outcome.rows
    assert row.jobs > 0, report
    assert (row.lost, row.beyond_one, row.left_running, row.stuck) == (0, 0, 0, 0), report
    assert (row.wrong_status, row.cancel_lost, row.broken_stream) == (0, 0, 0), report
    # Every job had its watcher, and each saw the job's terminal state through the restarts.
    assert row.watched == row.jobs, report
    assert row.missed_end == 0, report
    # Each gateway was replaced once, and each old one left as Kubernetes wants it to.
    assert len(row.exits) == REPLICAS, report
    assert row.bad_exits == 0, report
    assert all(e.code == 0 for e in row.exits), report
    assert all(e.budget_s == manifest_budget().after_sigterm_s for e in row.exits), report
    # Watchers were open when the gateways went: they had to connect again.
    assert outcome.details[0]["sse"]["connections"] > row.watched, report
    assert {c for c in outcome.stop_codes.values()} <= {0, None}, report
    assert outcome.nats_refusals == [], report


def test_manifest_budget_reads_the_gateway_deployment(tmp_path: Path) -> None:
    manifest = tmp_path / "gateway.yaml"
    manifest.write_text(
        "kind: Service\nmetadata: {name: gateway}\n---\n"
        "kind: Deployment\nmetadata: {name: gateway}\nspec:\n  template:\n    spec:\n"
        "      terminationGracePeriodSeconds: 45\n      containers:\n"
        "        - name: gateway\n          lifecycle:\n"
        "            preStop: {exec: {command: [sleep, '5']}}\n"
    )
    assert manifest_budget(manifest).after_sigterm_s == 40.0
    manifest.write_text(
        manifest.read_text().replace("{exec: {command: [sleep, '5']}}", "{sleep: {seconds: 7}}")
    )
    assert manifest_budget(manifest).after_sigterm_s == 38.0
    # The shipped manifest has one, and leaves time after preStop.
    assert manifest_budget().after_sigterm_s > 0
