"""The subcommands over fakes of their ports: where a job's owner comes from, which stuck jobs
are listed and why, which parked messages a replay takes."""

import uuid
from datetime import UTC, datetime, timedelta

from jobs_ops.commands import job_report, replay_parked, stuck_report
from jobs_ops.events import JobInStream
from jobs_ops.ports import StoreUnavailable
from jobs_ops.reports import ParkedMessage, PredictionReport, Replayed, StreamEvent
from jobs_proto.api import JobHistoryEntry, JobReply, JobView, StuckJob, StuckJobs
from jobs_proto.events import JobRequested, JobSubmitted, encode_event

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
JOB = uuid.UUID("6b1d8a8e-0f0e-4a43-9d59-0c5b7e6d1a21")


def view() -> JobView:
    return JobView(
        job_id=JOB,
        type="title_generation",
        status="processing",
        version=2,
        input={"topic": "t"},
        output=None,
        error=None,
        prediction_id="p2",
        created_at=NOW,
        updated_at=NOW,
        completed_at=None,
    )


class FakeBus:
    def __init__(
        self, *, in_stream: JobInStream, stuck: list[StuckJob] | None = None, up: bool = True
    ) -> None:
        self.in_stream = in_stream
        self.stuck_jobs = stuck or []
        self.up = up
        self.asked: list[tuple[str, str]] = []
        self.asked_stuck: list[float] = []
        self.replayed: list[int] = []

    @property
    def parked_stream(self) -> str:
        return "JOBS_PARKED"

    async def job_events(self, job_id: uuid.UUID) -> JobInStream:
        return self.in_stream

    async def job(self, job_id: uuid.UUID, user_id: str) -> JobReply:
        self.asked.append(("get", user_id))
        if not self.up:
            raise StoreUnavailable("the job-store is not answering (no responders)")
        return JobReply(job=view())

    async def history(self, job_id: uuid.UUID, user_id: str) -> list[JobHistoryEntry] | None:
        self.asked.append(("history", user_id))
        return [
            JobHistoryEntry(
                seq=2,
                kind="submitted",
                occurred_at=NOW,
                recorded_at=NOW,
                source="ai-runner",
                message_id="submitted",
                summary={"predictionId": "p1"},
            )
        ]

    async def stuck(self, older_than_s: float, limit: int) -> StuckJobs:
        self.asked_stuck.append(older_than_s)
        return StuckJobs(items=self.stuck_jobs, truncated=False)

    async def parked(self) -> list[tuple[ParkedMessage, bytes]]:
        return [(parked(seq), b"{}") for seq in (1, 2, 3)]

    async def replay(self, parked: ParkedMessage, body: bytes) -> Replayed:
        self.replayed.append(parked.seq)
        return Replayed(seq=parked.seq, outcome="replayed", subject=parked.original_subject)


class FakePredictions:
    def __init__(self) -> None:
        self.read: list[str] = []

    async def get(self, prediction_id: str) -> PredictionReport:
        self.read.append(prediction_id)
        return PredictionReport(prediction_id=prediction_id, status="processing")


def parked(seq: int) -> ParkedMessage:
    return ParkedMessage(
        seq=seq,
        time=NOW,
        reason="no_such_job",
        original_subject=f"job.completed.{JOB}",
        detail=None,
        msg_id=None,
        body="{}",
        replayable=True,
    )


def stream_of(*bodies: bytes) -> JobInStream:
    found = JobInStream()
    for seq, body in enumerate(bodies, 1):
        found.note(body)
        found.events.append(
            StreamEvent(seq=seq, time=NOW, kind="?", subject="?", msg_id=None, body="")
        )
    return found


REQUESTED = encode_event(
    JobRequested(job_id=JOB, occurred_at=NOW, user_id="u7", job_type="t", input={})
)
SUBMITTED = encode_event(JobSubmitted(job_id=JOB, occurred_at=NOW, prediction_id="p3"))


async def test_the_job_store_is_asked_as_the_owner_the_requested_event_names() -> None:
    bus = FakeBus(in_stream=stream_of(REQUESTED, SUBMITTED, b"not json"))
    predictions = FakePredictions()
    report = await job_report(JOB, bus, replicate=predictions)
    assert bus.asked == [("get", "u7"), ("history", "u7")]
    assert report.source == "job-store"
    assert report.job is not None
    assert report.job["userId"] == "u7"
    # From the history, the stream and the job, each once, oldest first.
    assert predictions.read == ["p1", "p3", "p2"]
    assert report.notes == []


async def test_without_an_owner_the_job_store_is_not_asked_and_the_note_says_why() -> None:
    bus = FakeBus(in_stream=JobInStream())
    report = await job_report(JOB, bus)
    assert bus.asked == []
    assert report.job is None
    assert any("pass --user" in note for note in report.notes)
    with_user = await job_report(JOB, bus, user_id="u9")
    assert ("get", "u9") in bus.asked
    assert with_user.source == "job-store"


async def test_a_job_store_that_does_not_answer_is_a_note_not_a_crash() -> None:
    bus = FakeBus(in_stream=stream_of(REQUESTED), up=False)
    report = await job_report(JOB, bus)
    assert report.job is None
    assert "the job-store is not answering (no responders)" in report.notes


def waiting(seconds: float, *, deadline_in_s: float, prediction_id: str | None) -> StuckJob:
    return StuckJob(
        job_id=uuid.uuid4(),
        user_id="u",
        type="title_generation",
        version=2,
        prediction_id=prediction_id,
        attempts=1,
        cancel_requested=False,
        processing_since=NOW - timedelta(seconds=seconds),
        deadline_at=NOW + timedelta(seconds=deadline_in_s),
    )


async def test_stuck_lists_the_old_and_the_overdue_with_why() -> None:
    old = waiting(4000, deadline_in_s=60, prediction_id="p1")
    overdue = waiting(200, deadline_in_s=-10, prediction_id=None)
    young = waiting(200, deadline_in_s=60, prediction_id="p2")
    bus = FakeBus(in_stream=JobInStream(), stuck=[old, overdue, young])
    predictions = FakePredictions()
    report = await stuck_report(3600, bus, replicate=predictions, now=NOW)
    # Asked from the shortest deadline, so a job past its deadline is seen however young.
    assert bus.asked_stuck == [180]
    assert [(i.job.job_id, i.reason) for i in report.items] == [
        (old.job_id, "prediction_running"),
        (overdue.job_id, "no_prediction"),
    ]
    assert predictions.read == ["p1"]


async def test_a_replay_takes_the_message_asked_for_or_all() -> None:
    bus = FakeBus(in_stream=JobInStream())
    one = await replay_parked(bus, 2)
    assert [r.seq for r in one.items] == [2]
    missing = await replay_parked(bus, 9)
    assert missing.items == []
    await replay_parked(bus, None)
    assert bus.replayed == [2, 1, 2, 3]
