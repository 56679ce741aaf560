"""The audit catches each kind of broken promise: fabricated records, one per violation, each
counted where it belongs and nowhere else."""

from __future__ import annotations

import pytest

from jobs_chaos.audit import Accepted, JobRecord, Prediction, Row, StoredJob, audit
from jobs_chaos.report import table
from jobs_chaos.scenarios import _shares

T0 = 1_000_000.0
STUCK_AFTER = 20.0


def job(
    n: int,
    status: str = "succeeded",
    predictions: tuple[tuple[str, str], ...] = (("p1", "succeeded"),),
    *,
    changes: tuple[float, ...] = (0.1, 0.5, 2.0),
    prediction_id: str | None = "p1",
    stored: bool = True,
) -> JobRecord:
    return JobRecord(
        accepted=Accepted(f"job-{n}", f"gateway-{n % 2}", T0),
        stored=StoredJob(
            status=status,
            prediction_id=prediction_id,
            error_code=None if status == "succeeded" else "prediction_failed",
            created_at=T0,
            changes=tuple(T0 + c for c in changes),
        )
        if stored
        else None,
        predictions=tuple(Prediction(i, s) for i, s in predictions),
    )


def run(*records: JobRecord) -> Row:
    return audit("s", list(records), refused=0, now=T0 + 60, stuck_after_s=STUCK_AFTER)


def counts(row: Row) -> dict[str, int]:
    return {
        "lost": row.lost,
        "beyond_one": row.beyond_one,
        "left_running": row.left_running,
        "stuck": row.stuck,
        "wrong_status": row.wrong_status,
    }


ZERO = {"lost": 0, "beyond_one": 0, "left_running": 0, "stuck": 0, "wrong_status": 0}


def test_healthy_jobs_are_clean() -> None:
    row = run(
        job(1),
        job(2, "failed", (("p2", "failed"),), prediction_id="p2"),
        # An orphan canceled by the system beside the one that ran is fine.
        job(3, predictions=(("p0", "canceled"), ("p1", "succeeded"))),
        # Every create refused: failed, no prediction.
        job(4, "failed", (), prediction_id=None),
        job(5, "failed", (("p5", "aborted"),), prediction_id="p5"),
    )
    assert counts(row) == ZERO
    assert row.clean
    assert row.jobs == 5
    assert row.statuses == {"succeeded": 2, "failed": 3}
    assert row.longest_to_terminal_s == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (job(1, stored=False), "lost"),
        (job(1, "processing", changes=(0.1, 0.5)), "lost"),
        (job(1, predictions=(("p1", "succeeded"), ("p2", "succeeded"))), "beyond_one"),
        (job(1, predictions=(("p1", "succeeded"), ("p2", "processing"))), "left_running"),
        (job(1, changes=(0.1, 0.5, 30.0)), "stuck"),
        (job(1, "failed", (("p1", "succeeded"),)), "wrong_status"),
        (job(1, "succeeded", (("p1", "failed"),)), "wrong_status"),
        (job(1, "succeeded", (("p1", "canceled"),)), "wrong_status"),
        (job(1, "canceled", (("p1", "succeeded"),)), "wrong_status"),
    ],
)
def test_each_violation_is_counted(record: JobRecord, kind: str) -> None:
    row = run(job(0), record)
    got = counts(row)
    assert got[kind] >= 1, got
    assert not row.clean
    assert any(v.kind == kind and v.job_id == "job-1" for v in row.violations)
    # The healthy neighbour is never blamed.
    assert all(v.job_id == "job-1" for v in row.violations)


def test_an_open_job_is_lost_and_stuck_counting_to_now() -> None:
    row = run(job(1, "pending", (), changes=(0.1,), prediction_id=None))
    assert row.lost == 1
    assert row.stuck == 1


def test_two_completed_predictions_count_each_extra_one() -> None:
    row = run(job(1, predictions=(("p1", "succeeded"), ("p2", "failed"), ("p3", "succeeded"))))
    assert row.beyond_one == 2
    # The status is judged by the prediction the job names, so it is not also "wrong".
    assert row.wrong_status == 0


def test_shares_survive_a_restarted_replica() -> None:
    work = "ai_runner_predictions_created_total"
    before = {"ai-runner": {"ai-runner-0": {work: 10.0}, "ai-runner-1": {work: 4.0}}}
    after = {"ai-runner": {"ai-runner-0": {work: 3.0}, "ai-runner-1": {work: 9.0}}}
    assert _shares(before, after) == {"ai-runner": {"ai-runner-0": 3.0, "ai-runner-1": 5.0}}
    row = run(job(1))
    row.shares = {"ai-runner": {"ai-runner-0": 0.0, "ai-runner-1": 2.0}}
    assert row.idle_replicas == ["ai-runner-0"]


def test_the_table_has_one_line_per_scenario() -> None:
    text = table([run(job(1)), run(job(1, stored=False))])
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("scenario")
    assert lines[3].split()[3] == "1"  # lost


def streamed(n: int, output: str, chunks: tuple[tuple[int, str], ...]) -> JobRecord:
    healthy = job(n)
    return JobRecord(
        accepted=healthy.accepted,
        stored=healthy.stored,
        predictions=healthy.predictions,
        output=output,
        streamed=chunks,
    )


def test_an_output_log_is_whole_a_prefix_or_broken() -> None:
    row = run(
        streamed(1, "Hello, world", ((0, "Hello, "), (7, "world"))),
        # The relay gave up halfway: the rest reaches clients from the stored output.
        streamed(2, "Hello, world", ((0, "Hello, "),)),
        streamed(3, "Hello, world", ((0, "Hello, "), (4, "o, world"))),  # a repeat
        streamed(4, "Hello, world", ((0, "Hel"), (5, ", world"))),  # a gap
        streamed(5, "Hello, world", ((0, "Hello, there"),)),  # not the output's text
    )
    assert (row.whole_stream, row.broken_stream) == (1, 3)
    assert [v.kind for v in row.violations] == ["broken_stream"] * 3
    assert "repeat" in row.violations[0].detail
    assert "gap" in row.violations[1].detail
    assert "character 7" in row.violations[2].detail
    assert not row.clean
    assert counts(row) == ZERO


def read(
    n: int, status: str, output: str | None, got: tuple[str, str | None, str | None]
) -> JobRecord:
    healthy = job(n, status, ((f"p{n}", status),), prediction_id=f"p{n}")
    return JobRecord(
        accepted=healthy.accepted,
        stored=healthy.stored,
        predictions=healthy.predictions,
        output=output,
        read=got,
    )


def test_what_a_client_read_must_be_the_output_and_end_with_the_jobs_status() -> None:
    row = run(
        read(1, "succeeded", "Hello", ("Hello", "succeeded", None)),
        # A failed job's text stops where the model failed; its `done` says so.
        read(2, "failed", None, ("Hel", "failed", None)),
        read(3, "succeeded", "Hello", ("Help", "succeeded", None)),
        read(4, "succeeded", "Hello", ("Hello", "failed", None)),
        read(5, "succeeded", "Hello", ("He", None, None)),
        read(6, "succeeded", "Hello", ("", None, "id 9 after 4 characters")),
    )
    assert row.broken_stream == 4
    details = [v.detail for v in row.violations]
    assert "differs from the output at character 3" in details[0]
    assert "done said failed, the job is succeeded" in details[1]
    assert "cut off" in details[2]
    assert "id 9 after 4 characters" in details[3]
