"""`make chaos` in short: every scenario once against the two-replica system, and every row
must read zero lost, zero beyond one, zero left running, zero stuck, zero wrong status, zero
user cancels not honoured, zero broken output streams."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs_chaos.run import run_all
from jobs_chaos.scenarios import SCENARIOS, SIZES


# One system serves every scenario in turn, so the run is one test; about four minutes on two
# busy cores, hence its own timeout.
@pytest.mark.timeout(480)
async def test_every_scenario_short(tmp_path: Path) -> None:
    outcome = await run_all(tmp_path / "system", SIZES["short"], list(SCENARIOS))
    report = outcome.table + "\n" + "\n".join(outcome.problems())
    assert [r.scenario for r in outcome.rows] == [s.name for s in SCENARIOS]
    for row in outcome.rows:
        assert row.jobs > 0, report
        assert (row.lost, row.beyond_one, row.left_running, row.stuck) == (0, 0, 0, 0), report
        assert row.wrong_status == 0, report
        assert row.cancel_lost == 0, report
        assert row.broken_stream == 0, report
    # A fifth of the jobs were canceled by their users, each with a definitive answer.
    cancels = sum(r.cancels for r in outcome.rows)
    assert cancels >= sum(r.jobs for r in outcome.rows) // 8, report
    assert sum(r.cancel_answers.get("none", 0) for r in outcome.rows) == 0, report
    # The relay kept up: most succeeded jobs' logs hold their whole output, even under faults.
    whole = sum(r.whole_stream for r in outcome.rows)
    succeeded = sum(r.statuses.get("succeeded", 0) for r in outcome.rows)
    assert whole >= succeeded // 2, report
    # Across the run, every replica of every service did some of the work.
    assert not outcome.idle_replicas, report
    # Every service ran as its own NATS user, and none was ever refused what it needed.
    assert outcome.nats_refusals == [], report
    path = outcome.write(tmp_path / "results", 0.0)
    assert path.exists()
