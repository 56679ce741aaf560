"""The cluster scenarios in short: the system on a three-node JetStream cluster (every stream
R3), the JOBS leader killed and a node cut off under load, and the audit reads all zeros."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs_chaos.cluster import CLUSTER_SCENARIOS
from jobs_chaos.run import run_all
from jobs_chaos.scenarios import SIZES

CHOSEN = [
    s for s in CLUSTER_SCENARIOS if "SIGKILL the JOBS leader" in s.name or "cut JOBS" in s.name
]


@pytest.mark.timeout(180)
async def test_cluster_scenarios_short(tmp_path: Path) -> None:
    assert len(CHOSEN) == 2
    outcome = await run_all(tmp_path / "system", SIZES["short"], CHOSEN, nodes=3)
    report = outcome.table + "\n" + "\n".join(outcome.problems())
    assert [r.scenario for r in outcome.rows] == [s.name for s in CHOSEN]
    for row in outcome.rows:
        assert row.jobs > 0, report
        assert (row.lost, row.beyond_one, row.left_running, row.stuck) == (0, 0, 0, 0), report
        assert row.wrong_status == 0, report
        assert row.broken_stream == 0, report
    assert {c for c in outcome.stop_codes.values()} <= {0, None}, report
    assert outcome.nats_refusals == [], report
