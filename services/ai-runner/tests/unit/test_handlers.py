"""The handlers over fake ports: what a requested job becomes, for each answer Replicate gives."""

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from ai_runner.handlers import Runner, handle_cancel_requested, handle_requested, handle_started
from ai_runner.ports import (
    Claim,
    PermanentRejection,
    ReplicateUnavailable,
    StoredClaim,
)
from jobs_proto.events import (
    JobCancelRequested,
    JobError,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSubmitted,
)
from jobs_proto.job_types import JOB_TYPES
from jobs_runtime.errors import Unavailable
from jobs_runtime.retry import RetryLater

from ..fakes import (
    CountingClaims,
    CountingObserver,
    Created,
    CutOffClaims,
    FakeClaims,
    FakeEvents,
    FakeHistory,
    FakeLimits,
    FakePredictions,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
HOOK = "https://hooks.example/api/webhooks/replicate?env=test"


def requested(job_type: str = "script_generation", **job_input: Any) -> JobRequested:
    return JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=NOW,
        user_id="user-1",
        job_type=job_type,
        input=job_input or {"topic": "tides"},
    )


def runner(
    predictions: FakePredictions,
    events: FakeEvents,
    webhook_base: str = HOOK,
    claims: FakeClaims | None = None,
    history: FakeHistory | None = None,
    now: datetime = NOW,
) -> Runner:
    return Runner(
        predictions=predictions,
        events=events,
        claims=claims if claims is not None else FakeClaims(),
        history=history if history is not None else FakeHistory(),
        webhook_base=webhook_base,
        binding_wait_s=30.0,
        max_attempts=3,
        now=lambda: now,
    )


async def test_a_valid_job_gets_one_prediction_and_is_submitted() -> None:
    predictions, events = FakePredictions(), FakeEvents()
    event = requested("title_generation", topic="tides", count=3)
    await handle_requested(event, runner(predictions, events))

    job_type = JOB_TYPES["title_generation"]
    assert predictions.created == [
        Created(
            model="google/gemini-3-pro",
            model_input=job_type.model_input(job_type.parse_input(event.input)),
            webhook=f"{HOOK}&job={event.job_id}",
            # A streaming model's text comes through the relay, not `output` webhooks.
            events=["start", "completed"],
        )
    ]
    assert events.published == [
        JobSubmitted(job_id=event.job_id, occurred_at=NOW, prediction_id="pred-1")
    ]


async def test_polling_mode_creates_without_a_webhook() -> None:
    predictions, events = FakePredictions(), FakeEvents()
    event = requested()
    await handle_requested(event, runner(predictions, events, webhook_base=""))
    assert [c.webhook for c in predictions.created] == [None]
    assert [type(e) for e in events.published] == [JobSubmitted]


async def test_an_unknown_job_type_fails_without_a_prediction() -> None:
    predictions, events = FakePredictions(), FakeEvents()
    event = requested("teleportation")
    await handle_requested(event, runner(predictions, events))
    assert predictions.created == []
    (failed,) = events.published
    assert isinstance(failed, JobFailed)
    assert failed.job_id == event.job_id
    assert failed.error.code == "unknown_job_type"
    assert "'teleportation'" in failed.error.message
    assert failed.prediction_id is None


@pytest.mark.parametrize(
    "job_input",
    [{"topic": ""}, {"topic": "   "}, {"tone": "dry"}, {"topic": "x", "durationMinutes": 0}],
)
async def test_invalid_input_fails_without_a_prediction(job_input: dict[str, Any]) -> None:
    predictions, events = FakePredictions(), FakeEvents()
    event = requested("script_generation", **job_input)
    await handle_requested(event, runner(predictions, events))
    assert predictions.created == []
    (failed,) = events.published
    assert isinstance(failed, JobFailed)
    assert failed.error.code == "invalid_input"


async def test_a_permanent_rejection_fails_the_job_with_replicates_words() -> None:
    rejection = PermanentRejection("Input validation failed: webhook must be an HTTP(S) URL")
    predictions, events = FakePredictions(failure=rejection), FakeEvents()
    event = requested()
    await handle_requested(event, runner(predictions, events))
    assert events.published == [
        JobFailed(
            job_id=event.job_id,
            occurred_at=NOW,
            error=JobError(code="prediction_rejected", message=str(rejection)),
        )
    ]


@pytest.mark.parametrize("needs_operator", [False, True])
async def test_a_transient_failure_is_raised_for_a_retry_and_publishes_nothing(
    needs_operator: bool,
) -> None:
    failure = ReplicateUnavailable("Internal Server Error", needs_operator=needs_operator)
    predictions, events = FakePredictions(failure=failure), FakeEvents()
    with pytest.raises(ReplicateUnavailable):
        await handle_requested(requested(), runner(predictions, events))
    assert events.published == []


def cancel_of(event: JobRequested) -> JobCancelRequested:
    return JobCancelRequested(job_id=event.job_id, occurred_at=NOW, user_id="user-1")


# At most one prediction per job -----------------------------------------------------------------


async def test_the_prediction_is_recorded_in_the_claim_with_the_job_types_deadline() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested("video_outline")
    await handle_requested(event, runner(predictions, events, claims=claims))
    assert claims.claim(event.job_id) == Claim(prediction_id="pred-1", job_type="video_outline")
    assert predictions.deadlines == [JOB_TYPES["video_outline"].deadline_s]


async def test_a_redelivered_request_announces_the_recorded_prediction_and_creates_none() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    for _ in range(3):
        await handle_requested(event, runner(predictions, events, claims=claims))
    assert len(predictions.created) == 1
    assert (
        events.published
        == [JobSubmitted(job_id=event.job_id, occurred_at=NOW, prediction_id="pred-1")] * 3
    )


async def test_a_create_in_flight_makes_another_delivery_wait_for_the_binding() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    claims.stored[event.job_id] = StoredClaim(Claim(creating_since=NOW), 4)
    later = NOW + timedelta(seconds=10)
    with pytest.raises(RetryLater) as waited:
        await handle_requested(event, runner(predictions, events, claims=claims, now=later))
    assert 0 < waited.value.delay_s <= 20
    assert predictions.created == []
    assert events.published == []


async def test_a_lost_create_is_adopted_from_the_jobs_events_instead_of_created_again() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    claims.stored[event.job_id] = StoredClaim(Claim(creating_since=NOW, attempts=1), 4)
    history = FakeHistory({event.job_id: "pred-from-start-webhook"})
    await handle_requested(event, runner(predictions, events, claims=claims, history=history))
    assert predictions.created == []
    assert claims.claim(event.job_id).prediction_id == "pred-from-start-webhook"
    assert events.published == [
        JobSubmitted(job_id=event.job_id, occurred_at=NOW, prediction_id="pred-from-start-webhook")
    ]


async def test_after_the_binding_window_the_job_is_created_again() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    claims.stored[event.job_id] = StoredClaim(Claim(creating_since=NOW), 4)
    later = NOW + timedelta(seconds=31)
    await handle_requested(event, runner(predictions, events, claims=claims, now=later))
    assert len(predictions.created) == 1
    assert claims.claim(event.job_id).prediction_id == "pred-1"


async def test_an_ambiguous_failure_keeps_the_create_in_flight_and_counts_an_attempt() -> None:
    failure = ReplicateUnavailable("Internal Server Error", ambiguous=True)
    predictions, events, claims = FakePredictions(failure=failure), FakeEvents(), FakeClaims()
    event = requested()
    with pytest.raises(ReplicateUnavailable):
        await handle_requested(event, runner(predictions, events, claims=claims))
    claim = claims.claim(event.job_id)
    assert claim.creating_since == NOW
    assert claim.attempts == 1
    assert claim.last_error == "Internal Server Error"
    # The redelivery waits for a binding rather than creating again.
    with pytest.raises(RetryLater):
        await handle_requested(event, runner(predictions, events, claims=claims))


async def test_attempts_are_counted_in_the_claim_until_the_job_fails() -> None:
    failure = ReplicateUnavailable("no answer from Replicate: ConnectError")
    predictions, events, claims = FakePredictions(failure=failure), FakeEvents(), FakeClaims()
    event = requested()
    for _ in range(2):
        with pytest.raises(ReplicateUnavailable):
            await handle_requested(event, runner(predictions, events, claims=claims))
    assert events.published == []
    await handle_requested(event, runner(predictions, events, claims=claims))  # acked
    (failed,) = events.published
    assert isinstance(failed, JobFailed)
    assert failed.error.code == "attempts_exhausted"
    assert "ConnectError" in failed.error.message
    # A redelivery repeats the failure and never creates.
    predictions.failure = None
    await handle_requested(event, runner(predictions, events, claims=claims))
    assert predictions.created == []
    assert events.published == [failed, failed]


@pytest.mark.parametrize(
    "failure",
    [
        ReplicateUnavailable("Request was throttled.", retry_after_s=7.0),
        ReplicateUnavailable("Unauthenticated", needs_operator=True),
    ],
)
async def test_throttling_and_refused_tokens_are_waits_not_attempts(
    failure: ReplicateUnavailable,
) -> None:
    predictions, events, claims = FakePredictions(failure=failure), FakeEvents(), FakeClaims()
    event = requested()
    for _ in range(5):
        with pytest.raises((RetryLater, ReplicateUnavailable)) as raised:
            await handle_requested(event, runner(predictions, events, claims=claims))
        if failure.throttled:
            assert isinstance(raised.value, RetryLater)
            assert raised.value.delay_s == 7.0
    assert claims.claim(event.job_id).attempts == 0
    assert claims.claim(event.job_id).creating_since is None
    assert events.published == []


# Cancellation -----------------------------------------------------------------------------------


async def test_a_cancel_before_the_runner_took_the_job_means_no_prediction_ever() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    await handle_cancel_requested(cancel_of(event), runner(predictions, events, claims=claims))
    await handle_requested(event, runner(predictions, events, claims=claims))
    assert predictions.created == []
    assert predictions.canceled == []
    assert events.published == []
    assert claims.claim(event.job_id).canceled


async def test_a_cancel_of_a_created_prediction_cancels_it_at_replicate() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    await handle_requested(event, runner(predictions, events, claims=claims))
    await handle_cancel_requested(cancel_of(event), runner(predictions, events, claims=claims))
    assert predictions.canceled == ["pred-1"]
    # A redelivered request afterwards creates nothing and announces nothing new.
    await handle_requested(event, runner(predictions, events, claims=claims))
    assert len(predictions.created) == 1
    assert len(events.published) == 1


async def test_a_cancel_racing_the_create_cancels_the_new_prediction() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    the_runner = runner(predictions, events, claims=claims)

    async def cancel_meanwhile() -> None:
        await handle_cancel_requested(cancel_of(event), the_runner)

    predictions.meanwhile = cancel_meanwhile
    await handle_requested(event, the_runner)
    assert predictions.canceled == ["pred-1"]
    assert events.published == []
    assert claims.claim(event.job_id).prediction_id == "pred-1"


async def test_an_orphan_from_a_late_answer_is_canceled_and_the_recorded_one_kept() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    the_runner = runner(predictions, events, claims=claims)

    async def another_runner_recorded() -> None:
        stored = claims.stored[event.job_id]
        claims.stored[event.job_id] = StoredClaim(
            Claim(prediction_id="pred-other"), stored.revision + 1
        )

    predictions.meanwhile = another_runner_recorded
    await handle_requested(event, the_runner)
    assert predictions.canceled == ["pred-1"]
    assert claims.claim(event.job_id).prediction_id == "pred-other"


async def test_what_the_handlers_did_is_counted_for_metrics() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    observer = CountingObserver()
    the_runner = dataclasses.replace(runner(predictions, events, claims=claims), observer=observer)
    created, adopted, canceled = requested(), requested(), requested()
    await handle_requested(created, the_runner)
    await handle_cancel_requested(cancel_of(created), the_runner)
    claims.stored[adopted.job_id] = StoredClaim(Claim(creating_since=NOW), 1)
    bound = dataclasses.replace(the_runner, history=FakeHistory({adopted.job_id: "p"}))
    await handle_requested(adopted, bound)
    await handle_cancel_requested(cancel_of(canceled), the_runner)
    predictions.failure = ReplicateUnavailable("throttled", retry_after_s=3.0)
    with pytest.raises(RetryLater):
        await handle_requested(requested(), the_runner)
    assert observer.counts == {
        "created:script_generation": 1,
        "canceled:prediction:script_generation": 1,
        "adopted": 1,
        "canceled:before:unknown": 1,
        "retried:throttled": 1,
    }


async def test_a_prediction_made_after_the_job_failed_is_canceled() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    the_runner = runner(predictions, events, claims=claims)

    async def attempts_ran_out_meanwhile() -> None:
        stored = claims.stored[event.job_id]
        failed = msgspec.structs.replace(
            stored.claim, failed=JobError(code="attempts_exhausted", message="x")
        )
        claims.stored[event.job_id] = StoredClaim(failed, stored.revision + 1)

    predictions.meanwhile = attempts_ran_out_meanwhile
    await handle_requested(event, the_runner)
    assert predictions.canceled == ["pred-1"]
    assert events.published == []


# The job's own deadline, its attempt number, the shared limits ------------------------------------


async def test_a_job_queued_past_its_deadline_fails_without_a_prediction() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested("title_generation")
    deadline_s = JOB_TYPES["title_generation"].deadline_s
    late = NOW + timedelta(seconds=deadline_s + 1)
    await handle_requested(event, runner(predictions, events, claims=claims, now=late))
    assert predictions.created == []
    (failed,) = events.published
    assert isinstance(failed, JobFailed)
    assert failed.error.code == "deadline_exceeded"
    assert f"{deadline_s}s" in failed.error.message
    # Recorded, so a redelivery repeats the failure instead of creating.
    assert claims.claim(event.job_id).failed == failed.error


async def test_cancel_after_is_what_is_left_of_the_deadline_counted_from_submission() -> None:
    predictions, events = FakePredictions(), FakeEvents()
    event = requested("video_outline")
    queued = NOW + timedelta(seconds=100.5)
    await handle_requested(event, runner(predictions, events, now=queued))
    assert predictions.deadlines == [JOB_TYPES["video_outline"].deadline_s - 100]


async def test_the_submitted_event_carries_the_attempt_that_made_the_prediction() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    event = requested()
    the_runner = runner(predictions, events, claims=claims)
    predictions.failure = ReplicateUnavailable("connection refused")
    for _ in range(2):
        with pytest.raises(ReplicateUnavailable):
            await handle_requested(event, the_runner)
    predictions.failure = None
    await handle_requested(event, the_runner)
    (submitted,) = events.published
    assert isinstance(submitted, JobSubmitted)
    assert submitted.attempt == 3


async def test_a_full_limit_makes_the_job_wait_without_marking_a_create_in_flight() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    limits, observer = FakeLimits(free=0), CountingObserver()
    event = requested()
    the_runner = dataclasses.replace(
        runner(predictions, events, claims=claims), limits=limits, observer=observer
    )
    with pytest.raises(RetryLater) as waited:
        await handle_requested(event, the_runner)
    assert waited.value.delay_s == 7.5
    assert predictions.created == []
    # No create is marked in flight, so the next delivery creates at once.
    stored = claims.stored.get(event.job_id)
    assert stored is None or stored.claim.creating_since is None
    assert observer.counts == {"limit_waited:creations": 1}

    limits.free = 1
    await handle_requested(event, the_runner)
    assert len(predictions.created) == 1
    # Held at most until the prediction's own deadline, plus a grace.
    assert limits.held[event.job_id] >= JOB_TYPES["script_generation"].deadline_s


async def test_a_create_that_made_nothing_frees_its_in_flight_slot() -> None:
    predictions, events = FakePredictions(), FakeEvents()
    limits = FakeLimits(free=3)
    the_runner = dataclasses.replace(runner(predictions, events), limits=limits)
    refused, unreachable, unknown = requested(), requested(), requested()
    predictions.failure = PermanentRejection("bad input")
    await handle_requested(refused, the_runner)
    predictions.failure = ReplicateUnavailable("connection refused")
    with pytest.raises(ReplicateUnavailable):
        await handle_requested(unreachable, the_runner)
    predictions.failure = ReplicateUnavailable("HTTP 500", ambiguous=True)
    with pytest.raises(ReplicateUnavailable):
        await handle_requested(unknown, the_runner)
    # The 500 may have made a prediction: its slot stays until that is known.
    assert limits.released == [refused.job_id, unreachable.job_id]


async def test_a_prediction_that_starts_for_a_job_bound_to_another_is_canceled_as_an_orphan() -> (
    None
):
    predictions, events, claims = FakePredictions(), FakeEvents(), FakeClaims()
    observer = CountingObserver()
    the_runner = dataclasses.replace(runner(predictions, events, claims=claims), observer=observer)
    bound, unbound = requested(), requested()
    claims.stored[bound.job_id] = StoredClaim(
        Claim(prediction_id="kept", job_type="script_generation"), 2
    )
    claims.stored[unbound.job_id] = StoredClaim(Claim(creating_since=NOW), 1)

    def started(event: JobRequested, prediction_id: str) -> JobStarted:
        return JobStarted(job_id=event.job_id, occurred_at=NOW, prediction_id=prediction_id)

    await handle_started(started(bound, "kept"), the_runner)
    await handle_started(started(bound, "stray"), the_runner)
    # Not bound yet: the binding adopts it, nothing is canceled.
    await handle_started(started(unbound, "first"), the_runner)
    await handle_started(started(requested(), "unclaimed"), the_runner)
    # A job that failed or was canceled before any prediction was recorded can use none.
    failed, canceled = requested(), requested()
    error = JobError(code="attempts_exhausted", message="x")
    claims.stored[failed.job_id] = StoredClaim(Claim(failed=error), 3)
    claims.stored[canceled.job_id] = StoredClaim(Claim(canceled=True), 3)
    await handle_started(started(failed, "late"), the_runner)
    await handle_started(started(canceled, "unwanted"), the_runner)
    assert predictions.canceled == ["stray", "late", "unwanted"]
    assert observer.counts == {"orphan_canceled": 3}
    assert events.published == []


async def test_a_first_delivery_claims_and_records_without_reading_the_claim() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), CountingClaims()
    event = requested()
    await handle_requested(event, runner(predictions, events, claims=claims))
    assert (claims.reads, claims.writes) == (0, 2)
    assert claims.claim(event.job_id).prediction_id == "pred-1"
    assert len(events.published) == 1


async def test_a_redelivery_reads_the_claim_once_and_announces_what_it_says() -> None:
    predictions, events, claims = FakePredictions(), FakeEvents(), CountingClaims()
    event = requested()
    the_runner = runner(predictions, events, claims=claims)
    await handle_requested(event, the_runner)
    claims.reads = claims.writes = 0
    await handle_requested(event, the_runner)
    # The claim exists: the optimistic create fails, one read decides, nothing is written.
    assert (claims.reads, claims.writes) == (1, 1)
    assert len(predictions.created) == 1
    assert [type(e) for e in events.published] == [JobSubmitted, JobSubmitted]


async def test_a_streaming_job_is_announced_with_its_stream_url_also_when_announced_again() -> None:
    predictions = FakePredictions(stream_base="https://stream.example/v1/streams/")
    events, claims = FakeEvents(), FakeClaims()
    event = requested()
    assert JOB_TYPES[event.job_type].streams
    await handle_requested(event, runner(predictions, events, claims=claims))
    await handle_requested(event, runner(predictions, events, claims=claims))
    urls = [e.stream_url for e in events.published if isinstance(e, JobSubmitted)]
    assert urls == ["https://stream.example/v1/streams/pred-1"] * 2
    assert len(predictions.created) == 1


# A created prediction's id is never dropped ------------------------------------------------------


@dataclasses.dataclass
class Clock:
    """Time that moves only when a handler pauses, by the pause's length."""

    now: datetime = NOW
    pauses: list[float] = dataclasses.field(default_factory=list)

    async def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += timedelta(seconds=seconds)


def cut_off_runner(predictions: FakePredictions, claims: CutOffClaims, clock: Clock) -> Runner:
    return dataclasses.replace(
        runner(predictions, FakeEvents(), claims=claims),
        now=lambda: clock.now,
        pause=clock.pause,
    )


async def test_a_created_prediction_is_recorded_once_nats_answers_again_not_created_twice() -> None:
    # Only this runner knows the id until it is recorded: handed back to the consumer it would
    # be forgotten, and after the binding window another runner would create a second one.
    predictions, claims, clock = FakePredictions(), CutOffClaims(refusals=4), Clock()
    event = requested()
    await handle_requested(event, cut_off_runner(predictions, claims, clock))
    assert len(predictions.created) == 1
    assert claims.claim(event.job_id).prediction_id == "pred-1"
    assert clock.pauses == [0.5, 1.0, 2.0, 4.0]
    assert predictions.canceled == []


async def test_a_prediction_still_unrecorded_at_the_jobs_deadline_is_handed_back() -> None:
    predictions, claims, clock = FakePredictions(), CutOffClaims(refusals=1_000), Clock()
    event = requested()
    with pytest.raises(Unavailable):
        await handle_requested(event, cut_off_runner(predictions, claims, clock))
    deadline_s = JOB_TYPES[event.job_type].deadline_s
    assert sum(clock.pauses) <= deadline_s
    assert sum(clock.pauses) + 4.0 >= deadline_s  # it kept trying up to the deadline
    assert len(predictions.created) == 1
