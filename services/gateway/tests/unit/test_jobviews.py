"""The gateway's view of running jobs: versions only go forward, a job never seen or not
confirmed lately is not answered, a terminal job is left to the finished-jobs cache, and an
announcement is decoded only when read."""

import uuid
from datetime import UTC, datetime

import msgspec

from gateway.jobviews import JobViews, read_head
from jobs_proto.api import JobChanged, JobView
from jobs_proto.status import JobStatus

from ..fakes import Ticks

JOB = uuid.UUID("00000000-0000-4000-8000-000000000001")
AT = datetime(2026, 1, 1, tzinfo=UTC)


def view(version: int, status: JobStatus = "processing", output: str | None = None) -> JobView:
    return JobView(
        job_id=JOB,
        type="title_generation",
        status=status,
        version=version,
        input={"topic": "t"},
        output=output,
        error=None,
        prediction_id="p",
        created_at=AT,
        updated_at=AT,
        completed_at=None,
    )


def announce(views: JobViews, job: JobView, *, omitted: bool = False, user: str = "alice") -> None:
    raw = msgspec.json.encode(JobChanged(user_id=user, job=job, output_omitted=omitted))
    views.offer_change(read_head(raw), raw)


def answered_version(views: JobViews) -> int | None:
    answer = views.answer(JOB)
    return None if answer is None else msgspec.json.decode(answer.body, type=JobView).version


def test_a_job_never_seen_is_not_answered() -> None:
    assert JobViews().answer(JOB) is None


def test_versions_only_go_forward_whatever_the_order() -> None:
    views = JobViews()
    announce(views, view(3, output="abc"))
    announce(views, view(2, output="ab"))
    views.offer_view("alice", view(1))
    assert answered_version(views) == 3
    views.offer_view("alice", view(4, output="abcd"))
    assert answered_version(views) == 4
    announce(views, view(4, output="abcd"))
    assert answered_version(views) == 4


def test_the_answer_names_the_owner_and_the_version_etag() -> None:
    views = JobViews()
    announce(views, view(2), user="bob")
    answer = views.answer(JOB)
    assert answer is not None
    assert answer.user_id == "bob"
    assert answer.etag == f'W/"{JOB}.2"'
    assert msgspec.json.decode(answer.body, type=JobView) == view(2)


def test_a_state_not_confirmed_for_max_age_is_left_to_the_job_store() -> None:
    clock = Ticks()
    views = JobViews(max_age_s=30, monotonic=clock)
    announce(views, view(2))
    clock.now += 29
    assert answered_version(views) == 2
    clock.now += 1
    assert views.answer(JOB) is None
    # The job-store's reply of the same version confirms it.
    views.offer_view("alice", view(2))
    assert answered_version(views) == 2


def test_a_terminal_job_is_not_answered_and_an_older_reply_cannot_bring_it_back() -> None:
    views = JobViews()
    announce(views, view(2))
    announce(views, view(3, status="succeeded", output="done"))
    assert views.answer(JOB) is None
    views.offer_view("alice", view(2))
    assert views.answer(JOB) is None


def test_an_announcement_without_its_output_is_left_to_the_job_store() -> None:
    views = JobViews()
    announce(views, view(2), omitted=True)
    assert views.answer(JOB) is None
    views.offer_view("alice", view(3, output="big"))
    assert answered_version(views) == 3


def test_the_views_are_bounded_and_can_be_forgotten() -> None:
    views = JobViews(max_jobs=2)
    for n in range(3):
        views.offer_view("alice", msgspec.structs.replace(view(1), job_id=uuid.UUID(int=n)))
    assert len(views) == 2
    assert views.answer(uuid.UUID(int=0)) is None
    assert views.answer(uuid.UUID(int=2)) is not None
    views.clear()
    assert len(views) == 0
