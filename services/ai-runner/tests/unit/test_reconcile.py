"""The reconciler over fake ports: what reading a stuck job's prediction publishes or cancels,
and when each job is read again."""

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from ai_runner.ports import (
    Claim,
    PermanentRejection,
    StoredClaim,
)
from ai_runner.reconcile import Reconciler
from jobs_proto.api import StuckJob
from jobs_proto.events import JobCompleted, JobStarted
from jobs_proto.replicate import ReplicatePrediction
from jobs_proto.status import job_outcome
from jobs_proto.subjects import message_id
from jobs_runtime.errors import Unavailable

from ..fakes import (
    NOW,
    Clock,
    FakeClaims,
    FakeEvents,
    FakeFinder,
    FakeLimits,
    FakePredictions,
    FakeReader,
    FakeResults,
)


@dataclass
class World:
    finder: FakeFinder = field(default_factory=FakeFinder)
    reader: FakeReader = field(default_factory=FakeReader)
    predictions: FakePredictions = field(default_factory=FakePredictions)
    events: FakeEvents = field(default_factory=FakeEvents)
    claims: FakeClaims = field(default_factory=FakeClaims)
    results: FakeResults = field(default_factory=FakeResults)
    limits: FakeLimits = field(default_factory=FakeLimits)
    clock: Clock = field(default_factory=Clock)

    def reconciler(self) -> Reconciler:
        return Reconciler(
            finder=self.finder,
            reader=self.reader,
            predictions=self.predictions,
            events=self.events,
            claims=self.claims,
            results=self.results,
            older_than_s=300.0,
            min_interval_s=2.0,
            max_interval_s=10.0,
            max_reads_per_s=1000.0,
            now=self.clock,
            limits=self.limits,
        )


def stuck(
    prediction_id: str | None = "p1",
    *,
    cancel_requested: bool = False,
    deadline_at: datetime | None = None,
) -> StuckJob:
    return StuckJob(
        job_id=uuid.uuid4(),
        user_id="user-1",
        type="script_generation",
        version=2,
        prediction_id=prediction_id,
        attempts=1,
        cancel_requested=cancel_requested,
        processing_since=NOW - timedelta(minutes=10),
        deadline_at=deadline_at,
    )


def prediction(status: str, pid: str = "p1", **fields: Any) -> ReplicatePrediction:
    return ReplicatePrediction(id=pid, status=status, **fields)  # type: ignore[arg-type]


async def test_a_finished_prediction_is_published_as_completed_with_the_polls_message_id() -> None:
    world = World()
    job = stuck()
    world.finder.items = [job]
    world.reader.answers["p1"] = prediction(
        "succeeded", output=["Hello", " world"], metrics={"predict_time": 1.5}
    )
    await world.reconciler().sweep()
    (completed,) = world.events.published
    assert isinstance(completed, JobCompleted)
    assert completed.job_id == job.job_id
    assert completed.output == "Hello world"
    assert completed.prediction_status == "succeeded"
    assert completed.predict_time_s == 1.5
    assert message_id(completed) == "completed:p1"
    assert world.limits.released == [job.job_id]
    assert world.finder.asked == [300.0]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (prediction("failed", error="out of memory"), ("failed", "prediction_failed")),
        (prediction("aborted"), ("failed", "deadline_exceeded")),
        (prediction("canceled"), ("failed", "deadline_exceeded")),
        (prediction("succeeded", data_removed=True), ("failed", "result_expired")),
    ],
)
async def test_each_final_status_ends_the_job_as_the_contract_says(
    answer: ReplicatePrediction, expected: tuple[str, str | None]
) -> None:
    world = World()
    world.finder.items = [stuck()]
    world.reader.answers["p1"] = answer
    await world.reconciler().sweep()
    (completed,) = world.events.published
    assert isinstance(completed, JobCompleted)
    outcome = job_outcome(
        completed.prediction_status,
        cancel_requested=False,
        data_removed=completed.data_removed,
        has_output=completed.output is not None,
    )
    assert outcome == expected


async def test_a_large_output_is_stored_aside_and_named_by_reference() -> None:
    world = World(results=FakeResults(limit=5))
    world.finder.items = [stuck()]
    world.reader.answers["p1"] = prediction("succeeded", output="more than five")
    await world.reconciler().sweep()
    (completed,) = world.events.published
    assert isinstance(completed, JobCompleted)
    assert (completed.output, completed.output_ref) == (None, "results/p1")
    assert world.results.stored == {"p1": "more than five"}


async def test_a_running_prediction_is_announced_started_once_and_read_again_ever_later() -> None:
    world = World()
    world.finder.items = [stuck()]
    world.reader.answers["p1"] = prediction("processing")
    reconciler = world.reconciler()
    reads_at = []
    for second in range(40):
        world.clock.at = NOW + timedelta(seconds=second)
        before = len(world.reader.reads)
        await reconciler.sweep()
        if len(world.reader.reads) > before:
            reads_at.append(second)
    assert [type(e) for e in world.events.published] == [JobStarted]
    assert message_id(world.events.published[0]) == "started:p1"
    gaps = [b - a for a, b in itertools.pairwise(reads_at)]
    assert gaps[0] == 2
    assert gaps == sorted(gaps)
    assert max(gaps) <= 10


async def test_a_prediction_past_its_jobs_deadline_or_asked_to_cancel_is_canceled() -> None:
    world = World()
    overdue = stuck("p1", deadline_at=NOW - timedelta(seconds=1))
    on_time = stuck("p2", deadline_at=NOW + timedelta(seconds=60))
    canceling = stuck("p3", cancel_requested=True)
    world.finder.items = [overdue, on_time, canceling]
    for pid in ("p1", "p2", "p3"):
        world.reader.answers[pid] = prediction("starting", pid)
    await world.reconciler().sweep()
    assert sorted(world.predictions.canceled) == ["p1", "p3"]
    # Nothing final was learnt: the job's end comes when the prediction reports `canceled`.
    assert world.events.published == []


async def test_the_claim_names_the_prediction_when_the_job_store_does_not_know_it() -> None:
    world = World()
    job = stuck(prediction_id=None)
    world.finder.items = [job]
    world.claims.stored[job.job_id] = StoredClaim(Claim(prediction_id="p9"), 1)
    world.reader.answers["p9"] = prediction("succeeded", "p9", output="done")
    await world.reconciler().sweep()
    (completed,) = world.events.published
    assert isinstance(completed, JobCompleted)
    assert completed.prediction_id == "p9"


async def test_read_failures_publish_nothing_and_the_job_is_read_again_later() -> None:
    world = World()
    lost, erring = stuck("gone"), stuck("flaky")
    world.finder.items = [lost, erring]
    world.reader.answers["gone"] = PermanentRejection("no such prediction")
    world.reader.answers["flaky"] = Unavailable("HTTP 503")
    reconciler = world.reconciler()
    await reconciler.sweep()
    assert world.events.published == []
    world.reader.answers["flaky"] = prediction("succeeded", "flaky", output="ok")
    world.clock.at = NOW + timedelta(seconds=2)
    await reconciler.sweep()
    assert [e.job_id for e in world.events.published] == [erring.job_id]
    # The unknown one waits the longest interval before it is asked again.
    assert world.reader.reads.count("gone") == 1
