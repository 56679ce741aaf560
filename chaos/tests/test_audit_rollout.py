"""The rollout's audit catches each kind of broken promise: a watcher that never saw its job's
end or saw another, and a replica that exited but 0, over its budget, or cut off by its grace."""

from __future__ import annotations

from jobs_chaos.audit import Exit, Row, Watched, audit_exits, audit_watchers
from jobs_chaos.report import rollout_note


def test_watchers() -> None:
    row = Row("rollout", jobs=5, refused=0)
    stored = {"a": "succeeded", "b": "failed", "c": "canceled", "d": "succeeded", "e": None}
    audit_watchers(
        row,
        stored,
        {
            "a": Watched("succeeded", None, 1.2),
            "b": Watched("failed", None, 0.0),
            "c": Watched(None, None, 3.5),
            "d": Watched("canceled", None, 0.4),
            "e": Watched(None, "version 2 after 3", 0.0),
        },
    )
    assert (row.watched, row.missed_end, row.longest_disconnected_s) == (5, 3, 3.5)
    assert [v.job_id for v in row.violations] == ["c", "d", "e"]
    assert {v.kind for v in row.violations} == {"missed_end"}
    assert not row.clean


def test_exits() -> None:
    row = Row("rollout", jobs=1, refused=0)
    audit_exits(
        row,
        [
            Exit("gateway-0", 0, 0.4, 40.0, streams=12),
            Exit("gateway-1", 1, 0.4, 40.0),
            Exit("gateway-0.1", 0, 41.0, 40.0),
            Exit("gateway-1.1", -9, 41.0, 40.0, grace_ran_out=True),
        ],
    )
    assert row.bad_exits == 3
    details = [v.detail for v in row.violations]
    assert details[0] == "exit code 1"
    assert details[1] == "41.0 s to exit, budget 40 s"
    assert "grace ran out" in details[2]
    assert "exit code -9" in details[2]
    assert not row.clean
    note = rollout_note(row)
    assert "4 replicas stopped holding 12 streams" in note
    assert "3 not clean" in note


def test_clean_rollout() -> None:
    row = Row("rollout", jobs=1, refused=0)
    audit_watchers(row, {"a": "succeeded"}, {"a": Watched("succeeded", None, 1.0)})
    audit_exits(row, [Exit("gateway-0", 0, 0.5, 40.0)])
    assert row.clean
    assert row.violations == []
