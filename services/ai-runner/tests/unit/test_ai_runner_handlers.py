"""The handlers over fake ports: what a requested job becomes, for each answer Replicate gives."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from ai_runner.handlers import Runner, handle_cancel_requested, handle_requested
from ai_runner.ports import PermanentRejection, PredictionFailure, TransientFailure
from jobs_proto.events import (
    JobCancelRequested,
    JobError,
    JobEvent,
    JobFailed,
    JobRequested,
    JobSubmitted,
)
from jobs_proto.job_types import JOB_TYPES

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
HOOK = "https://hooks.example/api/webhooks/replicate?env=test"


@dataclass
class Created:
    model: str
    model_input: dict[str, Any]
    webhook: str | None
    events: list[str]


@dataclass
class FakePredictions:
    failure: PredictionFailure | None = None
    created: list[Created] = field(default_factory=list)

    async def create(
        self, model: str, model_input: dict[str, Any], webhook: str | None, events: Sequence[str]
    ) -> str:
        if self.failure is not None:
            raise self.failure
        self.created.append(Created(model, model_input, webhook, list(events)))
        return f"pred-{len(self.created)}"


@dataclass
class FakeEvents:
    published: list[JobEvent] = field(default_factory=list)

    async def publish(self, event: JobEvent, /) -> object:
        self.published.append(event)
        return None


def requested(job_type: str = "script_generation", **job_input: Any) -> JobRequested:
    return JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=NOW,
        user_id="user-1",
        job_type=job_type,
        input=job_input or {"topic": "tides"},
    )


def runner(predictions: FakePredictions, events: FakeEvents, webhook_base: str = HOOK) -> Runner:
    return Runner(
        predictions=predictions, events=events, webhook_base=webhook_base, now=lambda: NOW
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
            events=["start", "output", "completed"],
        )
    ]
    assert events.published == [
        JobSubmitted(job_id=event.job_id, occurred_at=NOW, prediction_id="pred-1", attempt=1)
    ]


async def test_polling_mode_creates_without_a_webhook(caplog: pytest.LogCaptureFixture) -> None:
    predictions, events = FakePredictions(), FakeEvents()
    event = requested()
    await handle_requested(event, runner(predictions, events, webhook_base=""))
    assert [c.webhook for c in predictions.created] == [None]
    assert [type(e) for e in events.published] == [JobSubmitted]
    assert "polling is not implemented yet" in caplog.text


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
            error=JobError(code="prediction_rejected", message=rejection.message),
        )
    ]


@pytest.mark.parametrize("needs_operator", [False, True])
async def test_a_transient_failure_is_raised_for_a_retry_and_publishes_nothing(
    needs_operator: bool,
) -> None:
    failure = TransientFailure("Internal Server Error", needs_operator=needs_operator)
    predictions, events = FakePredictions(failure=failure), FakeEvents()
    with pytest.raises(TransientFailure):
        await handle_requested(requested(), runner(predictions, events))
    assert events.published == []


async def test_a_cancel_request_is_accepted_and_does_nothing_yet() -> None:
    predictions, events = FakePredictions(), FakeEvents()
    event = JobCancelRequested(job_id=uuid.uuid4(), occurred_at=NOW, user_id="user-1")
    await handle_cancel_requested(event, runner(predictions, events))
    assert predictions.created == []
    assert events.published == []
