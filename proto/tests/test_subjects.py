import uuid
from datetime import UTC, datetime

import pytest

from jobs_proto.events import (
    JobCancelRequested,
    JobCompleted,
    JobError,
    JobFailed,
    JobPurged,
    JobRequested,
    JobStarted,
    JobSubmitted,
)
from jobs_proto.subjects import SubjectError, Subjects, message_id

JOB = uuid.UUID("2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01")
AT = datetime(2026, 11, 28, tzinfo=UTC)


def test_event_subject_is_job_kind_id_under_the_prefix() -> None:
    event = JobSubmitted(job_id=JOB, occurred_at=AT, prediction_id="p1")
    assert Subjects().event(event) == f"job.submitted.{JOB}"
    assert Subjects("t42.").event(event) == f"t42.job.submitted.{JOB}"
    assert Subjects("t42.").kind("cancel_requested") == "t42.job.cancel_requested.>"
    assert Subjects().all_events == "job.>"
    assert Subjects("t42.").job_event("requested", JOB) == f"t42.job.requested.{JOB}"


def test_changes_and_progress_stay_outside_the_jobs_stream() -> None:
    subjects = Subjects()
    assert not subjects.job_change(JOB).startswith("job.")
    assert not subjects.progress(JOB).startswith("job.")


def test_parse_gives_kind_and_job_even_for_kinds_this_release_lacks() -> None:
    assert Subjects("t1.").parse(f"t1.job.teleported.{JOB}") == ("teleported", JOB)


@pytest.mark.parametrize(
    "subject", ["job.requested", f"x.job.requested.{JOB}", "job.requested.not-a-uuid", "job.a.b.c"]
)
def test_parse_rejects_what_is_not_an_event_subject(subject: str) -> None:
    with pytest.raises(SubjectError):
        Subjects().parse(subject)


@pytest.mark.parametrize("prefix", ["t1", ".", "a b.", "t*."])
def test_prefix_must_be_dot_terminated_tokens(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Subjects(prefix)


def test_message_ids_follow_the_contract() -> None:
    ok = JobError(code="c", message="m")
    cases = [
        (
            JobRequested(job_id=JOB, occurred_at=AT, user_id="u", job_type="t", input={}),
            f"requested:{JOB}",
        ),
        (JobSubmitted(job_id=JOB, occurred_at=AT, prediction_id="p1"), f"submitted:{JOB}:p1"),
        (JobStarted(job_id=JOB, occurred_at=AT, prediction_id="p1", webhook_id="msg_a"), "msg_a"),
        (JobStarted(job_id=JOB, occurred_at=AT, prediction_id="p1"), "started:p1"),
        (
            JobCompleted(
                job_id=JOB,
                occurred_at=AT,
                prediction_id="p1",
                prediction_status="succeeded",
                webhook_id="msg_b",
            ),
            "msg_b",
        ),
        (
            JobCompleted(
                job_id=JOB, occurred_at=AT, prediction_id="p1", prediction_status="succeeded"
            ),
            "completed:p1",
        ),
        (JobFailed(job_id=JOB, occurred_at=AT, error=ok), f"failed:{JOB}"),
        (JobCancelRequested(job_id=JOB, occurred_at=AT, user_id="u"), f"cancel:{JOB}"),
        (JobPurged(job_id=JOB, occurred_at=AT), f"purged:{JOB}"),
    ]
    for event, expected in cases:
        assert message_id(event) == expected


def test_message_id_does_not_depend_on_when_the_publish_is_retried() -> None:
    first = JobSubmitted(job_id=JOB, occurred_at=AT, prediction_id="p1")
    retry = JobSubmitted(job_id=JOB, occurred_at=datetime.now(UTC), prediction_id="p1")
    assert message_id(first) == message_id(retry)
