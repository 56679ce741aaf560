"""Admission and reads over fake ports: what is published, and when a read answers from the
job-store, from the stream, `None` (404) or `Unavailable` (503)."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from gateway.handlers import NewJob, admit_job, pending_view, read_job
from gateway.ports import Unavailable
from jobs_proto.api import GetJob, JobReply, JobView
from jobs_proto.events import JobEvent, JobRequested

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
JOB_ID = uuid.UUID("6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10")


@dataclass
class FakeBus:
    published: list[JobEvent] = field(default_factory=list)
    down: bool = False

    async def publish(self, event: JobEvent) -> None:
        if self.down:
            raise Unavailable("no JetStream")
        self.published.append(event)


@dataclass
class FakeStore:
    jobs: dict[tuple[uuid.UUID, str], JobView] = field(default_factory=dict)
    down: bool = False
    asked: list[GetJob] = field(default_factory=list)

    async def get_job(self, request: GetJob) -> JobReply:
        self.asked.append(request)
        if self.down:
            raise Unavailable("no responders")
        return JobReply(job=self.jobs.get((request.job_id, request.user_id)))


@dataclass
class FakeLog:
    events: dict[uuid.UUID, JobRequested] = field(default_factory=dict)
    down: bool = False

    async def find_requested(self, job_id: uuid.UUID) -> JobRequested | None:
        if self.down:
            raise Unavailable("no stream")
        return self.events.get(job_id)


def requested(user_id: str = "alice") -> JobRequested:
    return JobRequested(
        job_id=JOB_ID,
        occurred_at=AT,
        user_id=user_id,
        job_type="video_outline",
        input={"topic": "tides", "sections": None},
    )


async def test_admission_publishes_the_request_and_answers_pending() -> None:
    bus = FakeBus()
    job = NewJob(job_type="video_outline", input={"topic": "tides", "sections": None})
    accepted = await admit_job("alice", job, bus, clock=lambda: AT, new_id=lambda: JOB_ID)
    assert accepted.job_id == JOB_ID
    assert accepted.status == "pending"
    assert bus.published == [requested()]


async def test_admission_fails_when_the_event_is_not_stored() -> None:
    job = NewJob(job_type="video_outline", input={"topic": "tides"})
    with pytest.raises(Unavailable):
        await admit_job("alice", job, FakeBus(down=True), clock=lambda: AT)


async def test_a_job_the_store_knows_comes_from_the_store() -> None:
    view = pending_view(requested())
    stored = JobView(**{**{f: getattr(view, f) for f in view.__struct_fields__}, "version": 4})
    store = FakeStore(jobs={(JOB_ID, "alice"): stored})
    assert await read_job("alice", JOB_ID, store, FakeLog(down=True)) == stored
    assert store.asked == [GetJob(job_id=JOB_ID, user_id="alice")]


async def test_a_fresh_job_the_store_has_not_consumed_yet_is_pending_from_the_stream() -> None:
    log = FakeLog(events={JOB_ID: requested()})
    view = await read_job("alice", JOB_ID, FakeStore(), log)
    assert view == pending_view(requested())
    assert view is not None
    assert (view.status, view.version, view.created_at, view.updated_at) == ("pending", 1, AT, AT)


async def test_the_stream_also_answers_while_the_store_is_down() -> None:
    log = FakeLog(events={JOB_ID: requested()})
    assert await read_job("alice", JOB_ID, FakeStore(down=True), log) == pending_view(requested())


async def test_another_users_job_is_not_found_even_while_the_store_is_down() -> None:
    log = FakeLog(events={JOB_ID: requested(user_id="bob")})
    assert await read_job("alice", JOB_ID, FakeStore(), log) is None
    assert await read_job("alice", JOB_ID, FakeStore(down=True), log) is None


async def test_an_unknown_job_is_not_found_only_when_the_store_says_so() -> None:
    assert await read_job("alice", JOB_ID, FakeStore(), FakeLog()) is None
    with pytest.raises(Unavailable):
        await read_job("alice", JOB_ID, FakeStore(down=True), FakeLog())


async def test_a_stream_that_cannot_be_asked_is_unavailable_not_not_found() -> None:
    with pytest.raises(Unavailable):
        await read_job("alice", JOB_ID, FakeStore(), FakeLog(down=True))
