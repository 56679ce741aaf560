import uuid
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from jobs_proto.events import (
    EVENT_KINDS,
    JobCancelRequested,
    JobCompleted,
    JobError,
    JobEvent,
    JobFailed,
    JobPurged,
    JobRequested,
    JobStarted,
    JobSubmitted,
    decode_event,
    encode_event,
)
from jobs_proto.spend import Price

JOB = uuid.UUID("2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01")
AT = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=UTC)

# Pinned bytes: a change here breaks readers of the events already in the stream.
PINNED: list[tuple[JobEvent, bytes]] = [
    (
        JobRequested(
            job_id=JOB,
            occurred_at=AT,
            user_id="user-1",
            job_type="script_generation",
            input={"topic": "tides"},
            price=Price(per_output_token_usd=Decimal("0.000012")),
            reserved_micros=110_000,
        ),
        b'{"kind":"requested","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01",'
        b'"occurredAt":"2026-11-28T12:00:00.123000Z","userId":"user-1",'
        b'"jobType":"script_generation","input":{"topic":"tides"},'
        b'"price":{"perInputTokenUsd":null,"perOutputTokenUsd":"0.000012",'
        b'"perPredictSecondUsd":null},"reservedMicros":110000}',
    ),
    (
        JobSubmitted(
            job_id=JOB,
            occurred_at=AT,
            prediction_id="p1",
            attempt=2,
            stream_url="https://stream.replicate.com/v1/files/abc",
        ),
        b'{"kind":"submitted","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01",'
        b'"occurredAt":"2026-11-28T12:00:00.123000Z","predictionId":"p1","attempt":2,'
        b'"streamUrl":"https://stream.replicate.com/v1/files/abc"}',
    ),
    (
        JobStarted(job_id=JOB, occurred_at=AT, prediction_id="p1", webhook_id="msg_1"),
        b'{"kind":"started","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01",'
        b'"occurredAt":"2026-11-28T12:00:00.123000Z","predictionId":"p1","webhookId":"msg_1"}',
    ),
    (
        JobCompleted(
            job_id=JOB,
            occurred_at=AT,
            prediction_id="p1",
            prediction_status="succeeded",
            output="Once upon a tide",
            webhook_id="msg_2",
            predict_time_s=1.5,
            input_tokens=12,
            output_tokens=340,
        ),
        b'{"kind":"completed","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01",'
        b'"occurredAt":"2026-11-28T12:00:00.123000Z","predictionId":"p1",'
        b'"predictionStatus":"succeeded","output":"Once upon a tide","outputRef":null,'
        b'"error":null,"dataRemoved":false,"webhookId":"msg_2","predictTimeS":1.5,'
        b'"inputTokens":12,"outputTokens":340}',
    ),
    (
        JobFailed(
            job_id=JOB,
            occurred_at=AT,
            error=JobError(code="prediction_rejected", message="Invalid input"),
        ),
        b'{"kind":"failed","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01",'
        b'"occurredAt":"2026-11-28T12:00:00.123000Z",'
        b'"error":{"code":"prediction_rejected","message":"Invalid input"},"predictionId":null}',
    ),
    (
        JobCancelRequested(job_id=JOB, occurred_at=AT, user_id="user-1"),
        b'{"kind":"cancel_requested","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01",'
        b'"occurredAt":"2026-11-28T12:00:00.123000Z","userId":"user-1"}',
    ),
    (
        JobPurged(job_id=JOB, occurred_at=AT),
        b'{"kind":"purged","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01",'
        b'"occurredAt":"2026-11-28T12:00:00.123000Z","reason":"retention"}',
    ),
]


def test_every_kind_is_pinned() -> None:
    assert {e.kind for e, _ in PINNED} == set(EVENT_KINDS)


@pytest.mark.parametrize(("event", "wire"), PINNED, ids=lambda v: getattr(v, "kind", ""))
def test_encoding_is_pinned_and_round_trips(event: JobEvent, wire: bytes) -> None:
    assert encode_event(event) == wire
    assert decode_event(wire) == event


def test_readers_skip_fields_a_newer_release_added() -> None:
    wire = PINNED[1][1][:-1] + b',"region":"eu"}'
    assert decode_event(wire) == PINNED[1][0]


def test_events_are_frozen() -> None:
    event = PINNED[0][0]
    with pytest.raises(AttributeError):
        event.job_id = uuid.uuid4()  # type: ignore[misc]


def test_unknown_kind_and_bad_shapes_are_rejected_not_guessed() -> None:
    with pytest.raises(msgspec.ValidationError, match="kind"):
        decode_event(b'{"kind":"teleported","jobId":"2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01"}')
    with pytest.raises(msgspec.ValidationError, match="jobId"):
        decode_event(b'{"kind":"requested","jobId":"nope"}')
    with pytest.raises(msgspec.DecodeError):
        decode_event(b"{not json")
