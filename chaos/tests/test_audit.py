"""The audit catches each kind of broken promise: fabricated records, one per violation, each
counted where it belongs and nowhere else; user cancels honoured, raced or lost."""

from __future__ import annotations

import pytest

from jobs_chaos.audit import (
    Accepted,
    Cancel,
    JobRecord,
    Prediction,
    Row,
    StoredJob,
    audit,
    idle_gaps,
    prediction_of,
)
from jobs_chaos.records import unaccounted
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


def canceled_job(
    n: int,
    status: str,
    predictions: tuple[Prediction, ...],
    answer: int | None,
    *,
    accepted_at: float = 1.0,
) -> JobRecord:
    """A job its user canceled: the cancel sent a little before `accepted_at` (seconds after
    the 202) and answered `answer` then."""
    return JobRecord(
        accepted=Accepted(f"job-{n}", "gateway-0", T0),
        stored=StoredJob(
            status=status,
            prediction_id=predictions[0].id if predictions else None,
            error_code=None,
            created_at=T0,
            changes=(T0 + 0.1, T0 + 0.5, T0 + 2.0),
        ),
        predictions=predictions,
        cancel=Cancel(
            T0 + accepted_at - 0.05,
            None if answer is None else T0 + accepted_at,
            answer,
            "processing",
        ),
    )


def ran(status: str, *, ended: float | None = 2.0, pid: str = "p1") -> Prediction:
    return Prediction(pid, status, T0 + 0.4, None if ended is None else T0 + ended)


WINDOW = 5.0


def run_cancels(*records: JobRecord) -> Row:
    return audit(
        "s",
        list(records),
        refused=0,
        now=T0 + 60,
        stuck_after_s=STUCK_AFTER,
        cancel_window_s=WINDOW,
    )


def test_cancels_honoured() -> None:
    row = run_cancels(
        # Accepted while processing: the prediction canceled, the job canceled.
        canceled_job(1, "canceled", (ran("canceled"),), 202),
        # Accepted while pending: no prediction ever made.
        canceled_job(2, "canceled", (), 202, accepted_at=0.0),
        # An orphan created meanwhile and canceled by its creator is fine too.
        canceled_job(3, "canceled", (ran("canceled"), ran("canceled", pid="p2")), 202),
        # `409`: the job had already ended, as its prediction did.
        canceled_job(4, "succeeded", (ran("succeeded", ended=0.8),), 409),
        canceled_job(5, "failed", (ran("failed", ended=0.8),), 409),
        # Accepted, but the prediction had ended before (the store had not heard yet).
        canceled_job(6, "succeeded", (ran("succeeded", ended=0.9),), 202),
        # Accepted, and the prediction ended on its own while the cancel was on its way.
        canceled_job(7, "succeeded", (ran("succeeded", ended=1.0 + WINDOW - 1),), 202),
        # No answer at all: either outcome is allowed.
        canceled_job(8, "succeeded", (ran("succeeded"),), None),
        canceled_job(9, "canceled", (ran("canceled"),), None),
    )
    assert row.violations == []
    assert (row.cancels, row.cancel_lost, row.cancels_raced) == (9, 0, 1)
    assert row.cancel_answers == {"202": 5, "409": 2, "none": 2}
    assert row.statuses == {"canceled": 4, "succeeded": 4, "failed": 1}
    assert row.clean


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        # Accepted while the prediction ran, which then ran on to its end long after.
        (
            canceled_job(1, "succeeded", (ran("succeeded", ended=1.0 + WINDOW + 1),), 202),
            "accepted 6.0 s before its prediction",
        ),
        # The job says canceled, but its prediction ran to the end: paid, not delivered.
        (canceled_job(1, "canceled", (ran("succeeded"),), 202), "ran to the end"),
        (canceled_job(1, "canceled", (ran("succeeded"),), None), "ran to the end"),
        # `409` says the job had ended; it cannot then end canceled.
        (canceled_job(1, "canceled", (ran("canceled"),), 409), "answered 409"),
        # A cancel of a job just admitted must be known to every route.
        (canceled_job(1, "canceled", (), 404), "answered 404"),
    ],
)
def test_each_unhonoured_cancel_is_counted(record: JobRecord, detail: str) -> None:
    row = run_cancels(job(0), record)
    assert row.cancel_lost == 1
    assert not row.clean
    lost = [v for v in row.violations if v.kind == "cancel_lost"]
    assert len(lost) == 1
    assert lost[0].job_id == "job-1"
    assert detail in lost[0].detail
    assert all(v.job_id == "job-1" for v in row.violations)


def test_an_accepted_cancel_that_ends_failed_without_a_prediction_is_a_wrong_status() -> None:
    row = run_cancels(canceled_job(1, "failed", (), 202))
    assert row.wrong_status == 1
    assert "the simulator says canceled" in row.violations[0].detail


def test_a_long_prediction_is_not_a_stuck_job_but_a_wait_after_it_is() -> None:
    long_run = Prediction("p1", "succeeded", T0 + 0.4, T0 + 40.0)
    healthy = JobRecord(
        accepted=Accepted("job-1", "gateway-0", T0),
        stored=StoredJob("succeeded", "p1", None, T0, (T0 + 0.1, T0 + 0.5, T0 + 41.0)),
        predictions=(long_run,),
    )
    late = JobRecord(
        accepted=Accepted("job-2", "gateway-1", T0),
        stored=StoredJob("succeeded", "p1", None, T0, (T0 + 0.1, T0 + 0.5, T0 + 41.0 + 25.0)),
        predictions=(long_run,),
    )
    row = run(healthy, late)
    assert row.stuck == 1
    assert [v.job_id for v in row.violations] == ["job-2"]
    assert idle_gaps([0.0, 10.0, 50.0], [(1.0, 4.0), (3.0, 45.0)]) == [1.0, 5.0]


def test_a_second_job_for_one_submission_counts_beyond_one() -> None:
    accepted = [Accepted("job-1", "gateway-0", T0, "chaos s job 1")]
    stored = {"job-1": "chaos s job 1", "job-9": "chaos s job 1", "job-5": "chaos s job 2"}
    assert unaccounted(accepted, stored) == (["job-9"], ["job-5"])
    row = audit(
        "s",
        [job(1)],
        refused=0,
        now=T0 + 60,
        stuck_after_s=STUCK_AFTER,
        duplicate_jobs=("job-9",),
        unanswered_jobs=1,
    )
    assert row.beyond_one == 1
    assert row.unanswered_jobs == 1
    assert not row.clean


def test_the_simulators_times_are_read() -> None:
    raw = {
        "id": "p1",
        "status": "succeeded",
        "created_at": "2026-12-07T06:00:00.250000Z",
        "completed_at": "2026-12-07T06:00:10.750000Z",
    }
    p = prediction_of(raw)
    assert p.completed_at is not None
    assert p.created_at is not None
    assert p.completed_at - p.created_at == pytest.approx(10.5)
    assert prediction_of({"id": "p2", "status": "starting"}).completed_at is None


def test_the_table_shows_cancels() -> None:
    text = table([run_cancels(canceled_job(1, "canceled", (ran("succeeded"),), 202))])
    assert "cancel lost" in text.splitlines()[0]
    assert "1 (of 1)" in text.splitlines()[2]


def test_a_change_after_the_end_is_no_wait() -> None:
    # Canceled pending; its prediction's spend recorded 90 s later, when its webhook came.
    record = JobRecord(
        accepted=Accepted("job-1", "gateway-0", T0),
        stored=StoredJob("canceled", None, None, T0, (T0 + 0.1, T0 + 1.0, T0 + 90.0), T0 + 1.0),
        predictions=(Prediction("p1", "canceled", T0 + 0.2, T0 + 1.1),),
        cancel=Cancel(T0 + 0.9, T0 + 1.0, 202, "pending"),
    )
    row = run(record)
    assert row.violations == []
    assert row.longest_to_terminal_s == pytest.approx(1.0)
    # Without the end known, the late change counts as it always did.
    unknown = JobRecord(
        accepted=record.accepted,
        stored=StoredJob("canceled", None, None, T0, (T0 + 0.1, T0 + 1.0, T0 + 90.0)),
        predictions=record.predictions,
        cancel=record.cancel,
    )
    assert run(unknown).stuck == 1


def test_the_change_that_ended_the_job_counts_though_recorded_after_its_end() -> None:
    # The end is the event's time; the store records it a moment later.
    stored = StoredJob("succeeded", "p1", None, T0, (T0 + 0.1, T0 + 0.5, T0 + 30.02), T0 + 30.0)
    assert stored.waited_changes == (T0 + 0.1, T0 + 0.5, T0 + 30.02)
    row = run(
        JobRecord(Accepted("job-1", "gateway-0", T0), stored, (Prediction("p1", "succeeded"),))
    )
    assert row.stuck == 1
    assert row.longest_to_terminal_s == pytest.approx(30.02)
