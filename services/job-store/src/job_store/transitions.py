"""The job state machine as one pure function: (current row, event) -> (new row, history
entry), a `Park` (never to be applied, kept aside with its reason), or None.

Every consumer of `JOBS` must make redelivery, duplication and reordering harmless; here that
means an event that would change nothing (a duplicate, a late event for a finished job) returns
None, and every applied change bumps `version` exactly once and produces exactly one history
entry whose `seq` is that version.

Which prediction a job accepts `started` and `completed` from: the one it is bound to, and the
first that reports while it is bound to none (then it binds). That is sound because the job of
a webhook event is taken from the signed body's `webhook` URL (webhook-ingest), which only the
ai-runner writes when it creates the job's prediction; the ai-runner's own `submitted` and
polled `completed` name the prediction it created. So a prediction naming a job was made for
that job, and a pending job may still go straight to a terminal status when a completion
overtakes the news of the creation (no waiting on `submitted`, which would tie every job's end
to the ai-runner being up). Once bound, a `started` or `completed` of any other prediction is
parked (`other_prediction`), never applied: an orphan of a create whose answer was lost, or
something an operator should look at.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

from job_store.model import HistoryEntry, JobRow
from job_store.spend import admitted_with, ended, records_late_usage, with_price
from jobs_proto.events import (
    AnyJobEvent,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobPurged,
    JobRequested,
    JobStarted,
    JobSubmitted,
)
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.pending import as_utc, bounded_input
from jobs_proto.status import (
    DEADLINE_EXCEEDED,
    PREDICTION_FAILED,
    RESULT_EXPIRED,
    is_terminal,
    job_outcome,
)
from jobs_proto.subjects import message_id

# What a person reads when Replicate gave no error string of its own.
DEADLINE_MESSAGES: Final[dict[str, str]] = {
    "aborted": "The prediction was aborted: the job's deadline passed before it started.",
    "canceled": "The prediction was canceled because the job's deadline passed.",
}
RESULT_EXPIRED_MESSAGE: Final = (
    "The prediction succeeded, but Replicate removed its output before it was recorded."
)
PREDICTION_FAILED_MESSAGE: Final = "The prediction failed without an error message."


# Why an event is parked: it reports on a prediction other than the one its job is bound to.
OTHER_PREDICTION: Final = "other_prediction"


class Change(NamedTuple):
    """What applying an event does: the job's new row and the entry that records why."""

    row: JobRow
    entry: HistoryEntry


class Park(NamedTuple):
    """An event that must never be applied to its job: the caller keeps it aside (the parked
    stream) with `reason` (a metric label) and `detail` (for the operator), and settles it."""

    reason: str
    detail: str


def transition(row: JobRow | None, event: AnyJobEvent) -> Change | Park | None:
    """The job after `event` with its history entry, a `Park` for an event from a prediction
    that is not the job's, or None when the event changes nothing.

    `row` is None only for a job the store has never seen; only `requested` creates one (the
    caller decides what to do with any other event for an unknown job).
    """
    foreign = foreign_prediction(row, event)
    if foreign is not None:
        return foreign
    after = next_row(row, event)
    if after is None:
        return None
    return Change(after, history_entry(row, after, event))


def foreign_prediction(row: JobRow | None, event: AnyJobEvent) -> Park | None:
    """A `Park` for a `started` or `completed` of a prediction other than the one `row` is bound
    to, whatever the job's status: such news is never the job's, and an operator should see it
    (see the module's docstring for why the first prediction to report may bind)."""
    if row is None or row.prediction_id is None:
        return None
    if not isinstance(event, JobStarted | JobCompleted):
        return None
    if event.prediction_id == row.prediction_id:
        return None
    return Park(
        OTHER_PREDICTION,
        f"job {row.job_id} is bound to prediction {row.prediction_id}; "
        f"this {event.kind} is from prediction {event.prediction_id}",
    )


def history_entry(before: JobRow | None, after: JobRow, event: AnyJobEvent) -> HistoryEntry:
    """The record of one applied change; the summary never holds input or output (size)."""
    summary: dict[str, Any] = {
        "from": None if before is None else before.status,
        "to": after.status,
    }
    match event:
        case JobSubmitted():
            summary.update(predictionId=event.prediction_id, attempt=event.attempt)
        case JobStarted():
            summary.update(predictionId=event.prediction_id)
        case JobCompleted():
            summary.update(
                predictionId=event.prediction_id,
                predictionStatus=event.prediction_status,
                outputRef=event.output_ref,
                dataRemoved=event.data_removed,
            )
        case JobFailed():
            summary.update(predictionId=event.prediction_id)
        case _:
            pass
    if after.error_code is not None:
        summary["errorCode"] = after.error_code
    if before is not None and is_terminal(before.status):
        # The only change an ended job takes: metrics its prediction reported late.
        summary["usageRecorded"] = True
    if after.cancel_requested and (before is None or not before.cancel_requested):
        summary["cancelRequested"] = True
    return HistoryEntry(
        job_id=after.job_id,
        seq=after.version,
        kind=event.kind,
        occurred_at=as_utc(event.occurred_at),
        source=event_source(event),
        message_id=message_id(event),
        summary=summary,
    )


def event_source(event: AnyJobEvent) -> str:
    """The service that publishes this kind of event (per the contract's service table)."""
    match event:
        case JobRequested() | JobCancelRequested():
            return "gateway"
        case JobPurged():
            return "job-store"
        case JobStarted():
            return "webhook-ingest"
        case JobCompleted():
            # A completion comes from the webhook (it carries its id) or from the runner's poll.
            return "webhook-ingest" if event.webhook_id is not None else "ai-runner"
        case _:
            return "ai-runner"


def next_row(row: JobRow | None, event: AnyJobEvent) -> JobRow | None:
    """The job's row after `event`, or None when the event changes nothing."""
    at = as_utc(event.occurred_at)
    if row is None:
        if isinstance(event, JobRequested):
            job_type = JOB_TYPES.get(event.job_type)
            stored_input, truncated = bounded_input(event.input)
            created = JobRow(
                job_id=event.job_id,
                user_id=event.user_id,
                job_type=event.job_type,
                status="pending",
                version=1,
                input=stored_input,
                input_truncated=truncated,
                created_at=at,
                updated_at=at,
                deadline_at=None
                if job_type is None
                else at + timedelta(seconds=job_type.deadline_s),
            )
            return with_price(created, *admitted_with(event))
        return None
    if is_terminal(row.status):
        if isinstance(event, JobCompleted) and records_late_usage(row, event):
            return _late_usage(row, event, at)
        return None
    match event:
        case JobRequested():
            return None  # the job exists: a redelivered or republished request
        case JobSubmitted():
            return _submitted(row, event, at)
        case JobStarted():
            return _started(row, event, at)
        case JobCompleted():
            return _completed(row, event, at)
        case JobFailed():
            failed = replace(
                _bumped(row, at),
                status="failed",
                error_code=event.error.code,
                error_message=event.error.message,
                prediction_id=row.prediction_id or event.prediction_id,
                completed_at=at,
            )
            return ended(failed, None)
        case JobCancelRequested():
            return _cancel_requested(row, event, at)
        case JobPurged():
            return None  # a deletion, not a change of the row: the applier carries it out
    return None  # pragma: no cover - the match is exhaustive over AnyJobEvent


def _submitted(row: JobRow, event: JobSubmitted, at: datetime) -> JobRow | None:
    attempts = max(row.attempts, event.attempt)
    if row.status == "pending":
        return replace(
            _bumped(row, at),
            status="processing",
            prediction_id=event.prediction_id,
            submitted_at=at,
            attempts=attempts,
        )
    if row.prediction_id is None:
        return replace(
            _bumped(row, at), prediction_id=event.prediction_id, submitted_at=at, attempts=attempts
        )
    if row.prediction_id == event.prediction_id and row.submitted_at is None:
        # The news arrived after `started`: record it anyway, so the row ends the same whatever
        # order the two came in (the reconciler reads `submitted_at`).
        return replace(_bumped(row, at), submitted_at=at, attempts=attempts)
    # A duplicate, or the submission of a prediction the job is not bound to.
    return None


def _started(row: JobRow, event: JobStarted, at: datetime) -> JobRow | None:
    if _other_prediction(row, event.prediction_id):
        return None
    if row.status == "processing" and row.started_at is not None:
        return None  # a duplicate `start` webhook
    return replace(
        _bumped(row, at),
        status="processing",
        started_at=row.started_at or at,
        prediction_id=row.prediction_id or event.prediction_id,
    )


def _completed(row: JobRow, event: JobCompleted, at: datetime) -> JobRow | None:
    if _other_prediction(row, event.prediction_id):
        # The job is bound to the prediction recorded first; another one's end is not its end.
        return None
    has_output = event.output is not None or event.output_ref is not None
    cancel_requested = row.cancel_requested or _canceled_by_its_user(row, event, at)
    status, code = job_outcome(
        event.prediction_status,
        cancel_requested=cancel_requested,
        data_removed=event.data_removed,
        has_output=has_output,
    )
    done = replace(
        _bumped(row, at),
        cancel_requested=cancel_requested,
        status=status,
        output=event.output,
        error_code=code,
        error_message=_completion_message(event, code),
        prediction_id=row.prediction_id or event.prediction_id,
        completed_at=at,
    )
    return ended(done, event)


# Replicate's `Cancel-After` counts from the create, which comes after the admission the
# deadline counts from: a deadline's cancel never lands before `deadline_at`; the slack covers
# the clocks of Replicate and of this system.
DEADLINE_SLACK: Final = timedelta(seconds=2)


def _canceled_by_its_user(row: JobRow, event: JobCompleted, at: datetime) -> bool:
    """A bound prediction canceled well before the job's deadline was canceled for its user:
    the cancel request is on its way (replicas of the job-store may apply one job's events in
    another order than the stream's), so the job ends `canceled`, not `deadline_exceeded`."""
    return (
        event.prediction_status == "canceled"
        and row.deadline_at is not None
        and at < row.deadline_at - DEADLINE_SLACK
    )


def _late_usage(row: JobRow, event: JobCompleted, at: datetime) -> JobRow:
    """An ended job whose prediction reports its metrics after the job's end: the spend that
    happened is recorded (and settled by the database: the cost is added to what was spent);
    nothing else of the job changes."""
    return ended(_bumped(row, at), event)


def _completion_message(event: JobCompleted, code: str | None) -> str | None:
    if code is None:
        return None
    if code == PREDICTION_FAILED:
        return event.error or PREDICTION_FAILED_MESSAGE
    if code == RESULT_EXPIRED:
        return RESULT_EXPIRED_MESSAGE
    if code == DEADLINE_EXCEEDED:
        return DEADLINE_MESSAGES.get(event.prediction_status, DEADLINE_MESSAGES["canceled"])
    return event.error or code  # a code this release does not phrase itself


def _cancel_requested(row: JobRow, event: JobCancelRequested, at: datetime) -> JobRow | None:
    if event.user_id != row.user_id:
        # The gateway checks ownership before publishing; a mismatch is never honoured.
        return None
    if row.status == "pending":
        # No prediction exists yet, so nothing will report an end: the job ends here.
        canceled = replace(
            _bumped(row, at), status="canceled", cancel_requested=True, completed_at=at
        )
        return ended(canceled, None)
    if row.cancel_requested:
        return None
    # Processing: the ai-runner cancels the prediction and its completion ends the job.
    return replace(_bumped(row, at), cancel_requested=True)


def _other_prediction(row: JobRow, prediction_id: str) -> bool:
    return row.prediction_id is not None and row.prediction_id != prediction_id


def _bumped(row: JobRow, at: datetime) -> JobRow:
    """The row counted as changed once more at `at`; callers replace what the event changes."""
    # Events from different services carry their own clocks; `updated_at` never goes back.
    return replace(row, version=row.version + 1, updated_at=max(row.updated_at, at))
