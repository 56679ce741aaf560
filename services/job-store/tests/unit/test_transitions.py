"""The state machine, table-driven: every (status, event kind) pair, duplicates, outcomes, and
the history entry each change produces."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job_store.model import HistoryEntry, JobRow, job_view
from job_store.transitions import (
    OTHER_PREDICTION,
    Change,
    Park,
    next_row,
    transition,
)
from jobs_proto.events import EVENT_KINDS, AnyJobEvent, JobCompleted, JobPurged, JobStarted
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.pending import MAX_INPUT_BYTES, bounded_input, pending_view
from jobs_proto.spend import usd_to_micros
from jobs_proto.status import JOB_STATUSES, JobStatus, is_terminal
from jobs_testkit.events import (
    OWNER,
    PREDICTION,
    T0,
    at,
    cancel,
    completed,
    failed,
    requested,
    started,
    submitted,
)

JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")
SCRIPT = JOB_TYPES["script_generation"]


def row_in(status: JobStatus, **changes: object) -> JobRow:
    """A job as it looks in `status` after the usual events, last changed at 10 s."""
    row = JobRow(
        job_id=JOB,
        user_id=OWNER,
        job_type="script_generation",
        status=status,
        version=1,
        input={"topic": "tides"},
        created_at=T0,
        updated_at=T0,
    )
    if status != "pending":
        row = replace(row, version=2, prediction_id=PREDICTION, submitted_at=at(1))
    if is_terminal(status):
        row = replace(row, version=3, completed_at=at(10))
    row = replace(row, updated_at=at(10) if status != "pending" else T0)
    return replace(row, **changes)  # type: ignore[arg-type]


# One fresh (not duplicate) event of each kind, all about the job's own prediction, at 20 s.
EVENTS: dict[str, Callable[[], AnyJobEvent]] = {
    "requested": lambda: requested(JOB, s=20),
    "submitted": lambda: submitted(JOB, s=20),
    "started": lambda: started(JOB, s=20),
    "completed": lambda: completed(JOB, s=20),
    "failed": lambda: failed(JOB, s=20),
    "cancel_requested": lambda: cancel(JOB, s=20),
    # A purge deletes the job (the applier's doing): as a change of the row it is none.
    "purged": lambda: JobPurged(job_id=JOB, occurred_at=at(20)),
}

# (status before, event kind) -> status after, or None when the event changes nothing.
TABLE: dict[tuple[JobStatus, str], JobStatus | None] = {
    ("pending", "requested"): None,
    ("pending", "submitted"): "processing",
    ("pending", "started"): "processing",
    ("pending", "completed"): "succeeded",
    ("pending", "failed"): "failed",
    ("pending", "cancel_requested"): "canceled",
    ("pending", "purged"): None,
    ("processing", "requested"): None,
    ("processing", "submitted"): None,  # `row_in` has recorded the submission already
    ("processing", "started"): "processing",
    ("processing", "completed"): "succeeded",
    ("processing", "failed"): "failed",
    ("processing", "cancel_requested"): "processing",
    ("processing", "purged"): None,
    **{(s, kind): None for s in ("succeeded", "failed", "canceled") for kind in EVENTS},
}


def test_the_table_covers_every_status_and_kind() -> None:
    assert set(EVENTS) == set(EVENT_KINDS)
    assert set(TABLE) == {(s, k) for s in JOB_STATUSES for k in EVENTS}


@pytest.mark.parametrize(("status", "kind"), sorted(TABLE))
def test_every_status_and_event_kind(status: JobStatus, kind: str) -> None:
    before = row_in(status)
    after = next_row(before, EVENTS[kind]())
    expected = TABLE[status, kind]
    if expected is None:
        assert after is None
        return
    assert after is not None
    assert after.status == expected
    assert after.version == before.version + 1
    assert after.updated_at == at(20)
    # Identity and input never change after `requested`.
    assert (after.job_id, after.user_id, after.job_type, after.input, after.created_at) == (
        before.job_id,
        before.user_id,
        before.job_type,
        before.input,
        before.created_at,
    )


@pytest.mark.parametrize(("status", "kind"), sorted(k for k, v in TABLE.items() if v))
def test_the_same_event_again_changes_nothing(status: JobStatus, kind: str) -> None:
    once = next_row(row_in(status), EVENTS[kind]())
    assert once is not None
    assert next_row(once, EVENTS[kind]()) is None


def test_requested_creates_a_pending_job_at_version_1() -> None:
    row = next_row(None, requested(JOB, input={"topic": "tides", "tone": "calm"}))
    assert row == JobRow(
        job_id=JOB,
        user_id=OWNER,
        job_type="script_generation",
        status="pending",
        version=1,
        input={"topic": "tides", "tone": "calm"},
        created_at=T0,
        updated_at=T0,
        # script_generation's deadline is 600 s after the request.
        deadline_at=at(600),
        # An event without a price: the type's as configured, and its maximum reserved.
        price_input_token_usd=SCRIPT.price.per_input_token_usd,
        price_output_token_usd=SCRIPT.price.per_output_token_usd,
        price_predict_second_usd=SCRIPT.price.per_predict_second_usd,
        reserved_micros=usd_to_micros(SCRIPT.max_cost_usd),
    )


@pytest.mark.parametrize("kind", [k for k in EVENTS if k != "requested"])
def test_only_requested_creates_a_job(kind: str) -> None:
    assert next_row(None, EVENTS[kind]()) is None


def test_a_full_run_counts_one_version_per_change_and_records_its_times() -> None:
    row = next_row(None, requested(JOB))
    for event in (submitted(JOB), started(JOB), completed(JOB, output="Waves.")):
        assert row is not None
        row = next_row(row, event)
    assert row is not None
    assert (row.status, row.version, row.output, row.error) == ("succeeded", 4, "Waves.", None)
    assert (row.created_at, row.submitted_at, row.started_at, row.completed_at) == (
        T0,
        at(1),
        at(2),
        at(3),
    )
    assert row.updated_at == at(3)
    assert row.prediction_id == PREDICTION


def test_submitted_on_pending_records_the_prediction() -> None:
    row = next_row(row_in("pending"), submitted(JOB, s=20, prediction="p9"))
    assert row is not None
    assert (row.status, row.prediction_id, row.submitted_at) == ("processing", "p9", at(20))


def test_submitted_on_processing_without_a_prediction_sets_it() -> None:
    row = next_row(row_in("processing", prediction_id=None), submitted(JOB, s=20))
    assert row is not None
    assert (row.status, row.prediction_id, row.submitted_at) == ("processing", PREDICTION, at(20))


def test_submitted_after_started_records_the_submission_once() -> None:
    row = next_row(row_in("pending"), started(JOB, s=2))
    assert row is not None
    assert (row.status, row.prediction_id, row.started_at) == ("processing", PREDICTION, at(2))
    late = next_row(row, submitted(JOB, s=1))
    assert late is not None
    # The same row as if the submission had come first: the order of the news does not matter.
    assert (late.status, late.version, late.submitted_at, late.attempts) == (
        "processing",
        3,
        at(1),
        1,
    )
    assert next_row(late, submitted(JOB, s=1)) is None
    assert next_row(late, submitted(JOB, s=1, prediction="other")) is None


def test_started_for_another_prediction_changes_nothing() -> None:
    assert next_row(row_in("processing"), started(JOB, prediction="other")) is None


def test_a_completion_of_another_prediction_is_ignored() -> None:
    assert next_row(row_in("processing"), completed(JOB, prediction="other")) is None


# Every status a job can be in once it is bound to `PREDICTION`.
BOUND: list[JobStatus] = ["processing", "succeeded", "failed", "canceled"]


@pytest.mark.parametrize("status", BOUND)
@pytest.mark.parametrize(
    "event",
    [
        started(JOB, s=20, prediction="other"),
        completed(JOB, s=20, prediction="other", output="INJECTED"),
        completed(JOB, "canceled", s=20, prediction="other"),
    ],
    ids=["started", "completed", "completed-canceled"],
)
def test_news_of_another_prediction_is_parked_never_applied(
    status: JobStatus, event: AnyJobEvent
) -> None:
    outcome = transition(row_in(status), event)
    assert isinstance(outcome, Park)
    assert outcome.reason == OTHER_PREDICTION
    assert PREDICTION in outcome.detail
    assert "other" in outcome.detail


@pytest.mark.parametrize("status", BOUND)
def test_news_of_the_jobs_own_prediction_is_never_parked(status: JobStatus) -> None:
    for event in (started(JOB, s=20), completed(JOB, s=20), submitted(JOB, s=20)):
        assert not isinstance(transition(row_in(status), event), Park)


@pytest.mark.parametrize(
    "event",
    [
        submitted(JOB, s=20, prediction="other"),
        failed(JOB, s=20),
        cancel(JOB, s=20),
        requested(JOB, s=20),
    ],
    ids=["submitted", "failed", "cancel_requested", "requested"],
)
def test_only_news_of_a_prediction_is_ever_parked(event: AnyJobEvent) -> None:
    """The ai-runner's and the gateway's own events are judged as before: at worst, no change."""
    assert not isinstance(transition(row_in("processing"), event), Park)


def test_the_first_prediction_to_report_binds_a_job_bound_to_none() -> None:
    """Its job came from the signed webhook URL, which only the ai-runner writes; from then on
    every other prediction's news is parked."""
    first = transition(row_in("pending"), started(JOB, s=20, prediction="p7"))
    assert isinstance(first, Change)
    assert first.row.prediction_id == "p7"
    late = transition(first.row, completed(JOB, s=21, prediction="p8", output="INJECTED"))
    assert isinstance(late, Park)
    own = transition(first.row, completed(JOB, s=22, prediction="p7", output="Waves."))
    assert isinstance(own, Change)
    assert (own.row.status, own.row.output) == ("succeeded", "Waves.")


def test_a_completion_overtaking_the_submission_records_its_prediction() -> None:
    row = next_row(row_in("pending"), completed(JOB, s=20, prediction="p7"))
    assert row is not None
    assert (row.status, row.prediction_id, row.completed_at) == ("succeeded", "p7", at(20))


DEADLINE = "The prediction was canceled because the job's deadline passed."
ABORTED = "The prediction was aborted: the job's deadline passed before it started."
EXPIRED = "The prediction succeeded, but Replicate removed its output before it was recorded."


@pytest.mark.parametrize(
    ("cancel_requested", "event", "status", "code", "message", "output"),
    [
        (False, completed(JOB, output="Waves."), "succeeded", None, None, "Waves."),
        (True, completed(JOB, output="Waves."), "succeeded", None, None, "Waves."),
        (
            False,
            completed(JOB, "failed", error="CUDA out of memory"),
            "failed",
            "prediction_failed",
            "CUDA out of memory",
            None,
        ),
        (
            False,
            completed(JOB, "failed"),
            "failed",
            "prediction_failed",
            "The prediction failed without an error message.",
            None,
        ),
        (True, completed(JOB, "canceled"), "canceled", None, None, None),
        (False, completed(JOB, "canceled"), "failed", "deadline_exceeded", DEADLINE, None),
        (False, completed(JOB, "aborted"), "failed", "deadline_exceeded", ABORTED, None),
        (True, completed(JOB, "aborted"), "failed", "deadline_exceeded", ABORTED, None),
        (
            False,
            completed(JOB, data_removed=True),
            "failed",
            "result_expired",
            EXPIRED,
            None,
        ),
        (
            False,
            completed(JOB, output="Waves.", data_removed=True),
            "succeeded",
            None,
            None,
            "Waves.",
        ),
    ],
)
def test_a_completion_maps_the_prediction_per_the_contract(
    cancel_requested: bool,
    event: AnyJobEvent,
    status: JobStatus,
    code: str | None,
    message: str | None,
    output: str | None,
) -> None:
    row = next_row(row_in("processing", cancel_requested=cancel_requested), event)
    assert row is not None
    assert (row.status, row.error_code, row.error_message, row.output) == (
        status,
        code,
        message,
        output,
    )
    assert row.completed_at == event.occurred_at


def test_failed_records_the_events_error() -> None:
    row = next_row(row_in("processing"), failed(JOB, s=20, code="prediction_rejected"))
    assert row is not None
    assert row.error is not None
    assert (row.status, row.error.code, row.completed_at) == (
        "failed",
        "prediction_rejected",
        at(20),
    )
    assert row.error.message == "Replicate kept refusing the prediction."


def test_cancel_of_a_pending_job_ends_it_without_a_prediction() -> None:
    row = next_row(row_in("pending"), cancel(JOB, s=20))
    assert row is not None
    assert (row.status, row.cancel_requested, row.completed_at) == ("canceled", True, at(20))
    assert row.prediction_id is None


def test_cancel_of_a_processing_job_waits_for_the_prediction() -> None:
    row = next_row(row_in("processing"), cancel(JOB, s=20))
    assert row is not None
    assert (row.status, row.cancel_requested, row.completed_at) == ("processing", True, None)


def test_a_prediction_canceled_before_the_deadline_ends_the_job_canceled_ahead_of_its_request() -> (
    None
):
    # Two job-store replicas may apply the prediction's end before the user's cancel request.
    row = next_row(row_in("processing", deadline_at=at(600)), completed(JOB, "canceled", s=20))
    assert row is not None
    assert (row.status, row.cancel_requested, row.error_code) == ("canceled", True, None)
    assert next_row(row, cancel(JOB, s=21)) is None


def test_a_prediction_canceled_at_the_deadline_is_the_deadlines() -> None:
    for ended_at in (599, 650):
        ended = completed(JOB, "canceled", s=ended_at)
        row = next_row(row_in("processing", deadline_at=at(600)), ended)
        assert row is not None
        assert (row.status, row.error_code) == ("failed", "deadline_exceeded"), ended_at


def test_cancel_by_another_user_is_never_honoured() -> None:
    assert next_row(row_in("pending"), cancel(JOB, user="intruder")) is None


def test_updated_at_never_goes_backwards() -> None:
    row = next_row(row_in("processing"), started(JOB, s=5))  # before the row's 10 s
    assert row is not None
    assert (row.updated_at, row.started_at) == (at(10), at(5))


def test_a_timestamp_without_an_offset_is_read_as_utc() -> None:
    naive = datetime(2025, 3, 1, 12, 0, 30)
    row = next_row(row_in("pending"), msgspec.structs.replace(submitted(JOB), occurred_at=naive))
    assert row is not None
    assert row.submitted_at == at(30)


# Any order of the events of one job, any of them repeated: duplicates and reordering are
# harmless, versions count changes, a terminal status sticks.
_ALL_EVENTS: list[AnyJobEvent] = [
    submitted(JOB),
    started(JOB),
    completed(JOB),
    completed(JOB, "canceled"),
    failed(JOB),
    cancel(JOB),
    submitted(JOB, prediction="other"),
    started(JOB, prediction="other"),
    completed(JOB, prediction="other"),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ALL_EVENTS), max_size=12))
def test_any_sequence_keeps_the_invariants(events: list[AnyJobEvent]) -> None:
    row = next_row(None, requested(JOB))
    assert row is not None
    changes = 1
    for event in events:
        change = transition(row, event)
        assert next_row(row, requested(JOB)) is None
        if isinstance(change, Park):
            # Parked only once bound, and only news of a prediction other than the bound one.
            assert isinstance(event, JobStarted | JobCompleted)
            assert row.prediction_id not in (None, event.prediction_id)
            continue
        if change is None:
            continue
        after, entry = change
        # One history entry per change, numbered by the version it produced.
        assert (entry.seq, entry.kind, entry.summary["to"]) == (
            after.version,
            event.kind,
            after.status,
        )
        changes += 1
        assert not is_terminal(row.status), "a terminal status changed"
        assert after.version == row.version + 1
        assert after.updated_at >= row.updated_at
        # Applying the same event right away again is always a no-op.
        assert next_row(after, event) is None
        row = after
    assert row.version == changes


def test_each_change_comes_with_its_history_entry() -> None:
    created = transition(None, requested(JOB))
    assert isinstance(created, Change)
    assert created.entry == HistoryEntry(
        job_id=JOB,
        seq=1,
        kind="requested",
        occurred_at=T0,
        source="gateway",
        message_id=f"requested:{JOB}",
        summary={"from": None, "to": "pending"},
    )
    change = transition(created.row, submitted(JOB))
    assert isinstance(change, Change)
    assert (change.entry.seq, change.entry.source, change.entry.message_id) == (
        2,
        "ai-runner",
        f"submitted:{JOB}:{PREDICTION}",
    )
    assert change.entry.summary == {
        "from": "pending",
        "to": "processing",
        "predictionId": PREDICTION,
        "attempt": 1,
    }
    ended = transition(change.row, completed(JOB, "failed", error="boom"))
    assert isinstance(ended, Change)
    assert ended.entry.source == "ai-runner"  # no webhook id: learnt by polling
    assert ended.entry.summary["errorCode"] == "prediction_failed"
    assert "output" not in ended.entry.summary
    canceling = transition(change.row, cancel(JOB))
    assert isinstance(canceling, Change)
    assert canceling.entry.summary == {
        "from": "processing",
        "to": "processing",
        "cancelRequested": True,
    }
    assert transition(ended.row, completed(JOB)) is None


def test_a_started_webhook_is_recorded_as_webhook_ingests() -> None:
    change = transition(row_in("processing"), started(JOB, s=20))
    assert isinstance(change, Change)
    assert (change.entry.source, change.entry.message_id) == ("webhook-ingest", "w1")


def test_a_job_of_an_unknown_type_has_no_deadline() -> None:
    row = next_row(None, msgspec.structs.replace(requested(JOB), job_type="from_the_future"))
    assert row is not None
    assert row.deadline_at is None


def test_an_input_within_the_limit_is_stored_whole() -> None:
    row = next_row(None, requested(JOB, input={"topic": "t" * 1000}))
    assert row is not None
    assert (row.input, row.input_truncated) == ({"topic": "t" * 1000}, False)


def test_an_input_over_the_limit_is_cut_down_and_marked() -> None:
    sent = {"topic": "tides", "context": "ü\n" * MAX_INPUT_BYTES, "tone": "calm"}
    row = next_row(None, requested(JOB, input=sent))
    assert row is not None
    assert row.input_truncated is True
    assert (row.input, True) == bounded_input(sent)  # proto's rule, tested there


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.text(max_size=30_000), st.integers(), st.lists(st.text(max_size=500))),
        max_size=8,
    ),
    st.datetimes(),
)
@settings(max_examples=100, deadline=None)
def test_the_first_row_shows_what_the_gateway_shows_before_it(
    sent: dict[str, Any], occurred_at: datetime
) -> None:
    # One definition of a job right after admission: the gateway answers `pending_view` while
    # the job-store has not applied the request yet, and must then agree with its first row.
    event = msgspec.structs.replace(requested(JOB, input=sent), occurred_at=occurred_at)
    row = next_row(None, event)
    assert row is not None
    assert job_view(row) == pending_view(event)


@pytest.mark.parametrize("status", JOB_STATUSES)
def test_the_view_shows_a_cancel_request_only_until_the_job_ends(status: JobStatus) -> None:
    asked = job_view(row_in(status, cancel_requested=True))
    assert asked.cancel_requested is not is_terminal(status)
    assert job_view(row_in(status)).cancel_requested is False
