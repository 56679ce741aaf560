"""The handler over fake ports: which event a webhook becomes, and which outcome it gets; the
job is the one the signed body's `webhook` URL names, never the request's `?job=` alone."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from jobs_proto.api import JobProgress
from jobs_proto.events import JobCompleted, JobStarted
from jobs_proto.stream import MAX_EVENT_BYTES, MAX_INLINE_OUTPUT_BYTES
from jobs_proto.subjects import message_id
from webhook_ingest.handlers import (
    NotStored,
    Parked,
    Rejected,
    Stored,
    WebhookEvent,
    ingest_webhook,
)
from webhook_ingest.verify import VerifiedWebhook

from ..fakes import FakeEvents, FakeOutput, FakeParking, FakeProgress, FakeResults

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# Fixed ids: parallel test workers must collect the same parametrized test names.
JOB_ID = uuid.UUID("47595ef0-7989-43b5-b36b-273c740cd95e")
OTHER_JOB = uuid.UUID("0d7b6c7e-2f3a-4c55-9a1e-5b8f0c2d4e61")


def hook(job: uuid.UUID | str) -> str:
    """The webhook URL the ai-runner creates a job's prediction with."""
    return f"https://hooks.example/api/webhooks/replicate?job={job}"


def first(events: FakeEvents) -> WebhookEvent:
    """The first event stored, as the handler's outcome names it."""
    event = events.stored[0]
    assert isinstance(event, JobStarted | JobCompleted)
    return event


def prediction(status: str, **fields: Any) -> bytes:
    """A prediction of the job `JOB_ID` as Replicate sends it (`webhook` echoed)."""
    return json.dumps(
        {"id": "pred-1", "status": status, "webhook": hook(JOB_ID), **fields}
    ).encode()


def webhook(body: bytes, webhook_id: str = "msg_1") -> VerifiedWebhook:
    return VerifiedWebhook(webhook_id=webhook_id, timestamp=NOW, body=body)


async def ingest(
    body: bytes,
    *,
    job: str | None = str(JOB_ID),
    events: FakeEvents | None = None,
    progress: FakeProgress | None = None,
    results: FakeResults | None = None,
    parking: FakeParking | None = None,
    webhook_id: str = "msg_1",
) -> tuple[Any, FakeEvents, FakeProgress]:
    events = events or FakeEvents()
    progress = progress or FakeProgress()
    outcome = await ingest_webhook(
        webhook(body, webhook_id),
        job,
        events=events,
        progress=progress,
        results=results or FakeResults(),
        parking=parking or FakeParking(),
        now=NOW,
    )
    return outcome, events, progress


async def test_a_completed_prediction_becomes_job_completed() -> None:
    body = prediction(
        "succeeded",
        output=["Once ", "upon ", "a time"],
        metrics={"predict_time": 12.5},
        logs="secret-free logs",
    )
    outcome, events, progress = await ingest(body)
    assert outcome == Stored(first(events), duplicate=False)
    assert events.stored == [
        JobCompleted(
            job_id=JOB_ID,
            occurred_at=NOW,
            prediction_id="pred-1",
            prediction_status="succeeded",
            output="Once upon a time",
            webhook_id="msg_1",
            predict_time_s=12.5,
        )
    ]
    assert message_id(events.stored[0]) == "msg_1"
    assert progress.sent == []


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted"])
async def test_every_final_status_is_a_completion(status: str) -> None:
    outcome, events, _ = await ingest(prediction(status, error="boom", data_removed=True))
    assert isinstance(outcome, Stored)
    (event,) = events.stored
    assert isinstance(event, JobCompleted)
    assert (event.prediction_status, event.error, event.data_removed, event.output) == (
        status,
        "boom",
        True,
        None,
    )


async def test_a_redelivered_final_webhook_is_a_duplicate() -> None:
    events = FakeEvents()
    first, *_ = await ingest(prediction("succeeded", output="x"), events=events)
    again, *_ = await ingest(prediction("succeeded", output="x"), events=events)
    assert isinstance(first, Stored)
    assert not first.duplicate
    assert isinstance(again, Stored)
    assert again.duplicate
    assert len(events.stored) == 1


async def test_output_webhooks_store_one_started_and_send_progress() -> None:
    events, progress = FakeEvents(), FakeProgress()
    for n, chunks in enumerate((["Hel"], ["Hel", "lo"], ["Hel", "lo", "!"]), start=1):
        outcome, *_ = await ingest(
            prediction("processing", output=chunks),
            events=events,
            progress=progress,
            webhook_id=f"msg_out_{n}",
        )
        assert isinstance(outcome, Stored)
        assert outcome.progress_sent is True
        assert outcome.duplicate == (n > 1)
    assert events.stored == [JobStarted(job_id=JOB_ID, occurred_at=NOW, prediction_id="pred-1")]
    assert message_id(events.stored[0]) == "started:pred-1"
    assert progress.sent == [
        JobProgress(job_id=JOB_ID, output="Hel", seq=1, prediction_id="pred-1"),
        JobProgress(job_id=JOB_ID, output="Hello", seq=2, prediction_id="pred-1"),
        JobProgress(job_id=JOB_ID, output="Hello!", seq=3, prediction_id="pred-1"),
    ]


@pytest.mark.parametrize("output", [None, [], ""])
async def test_a_start_without_output_sends_no_progress(output: Any) -> None:
    outcome, events, progress = await ingest(prediction("starting", output=output))
    assert outcome == Stored(first(events), duplicate=False, progress_sent=None)
    assert isinstance(events.stored[0], JobStarted)
    assert progress.sent == []


async def test_progress_of_a_single_string_counts_its_characters() -> None:
    _, _, progress = await ingest(prediction("processing", output="abcd"))
    assert progress.sent == [
        JobProgress(job_id=JOB_ID, output="abcd", seq=4, prediction_id="pred-1")
    ]


async def test_progress_that_cannot_be_sent_still_answers_stored() -> None:
    outcome, events, _ = await ingest(
        prediction("processing", output=["a"]), progress=FakeProgress(down=True)
    )
    assert outcome == Stored(first(events), duplicate=False, progress_sent=False)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"status": "succeeded"}',
        b'{"id": "p", "status": "exploded"}',
        b'{"id": 7, "status": "succeeded"}',
        b'{"id": "p", "status": "failed", "error": {"nested": true}}',
    ],
)
async def test_a_body_that_is_no_prediction_is_rejected(body: bytes) -> None:
    outcome, events, _ = await ingest(body)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "not_a_prediction"
    assert events.stored == []


@pytest.mark.parametrize("job", ["", "42", "not-a-uuid", f"{JOB_ID}x"])
async def test_the_job_parameter_must_be_a_uuid(job: str) -> None:
    outcome, events, _ = await ingest(prediction("succeeded"), job=job)
    assert outcome == Rejected("bad_job_id", "the query parameter 'job' must be a job id (a UUID)")
    assert events.stored == []


@pytest.mark.parametrize("job", [str(JOB_ID), str(JOB_ID).upper(), None])
async def test_the_job_is_the_one_the_signed_webhook_url_names(job: str | None) -> None:
    """`?job=` may repeat the signed job (as Replicate sends it) or be left out."""
    outcome, events, progress = await ingest(prediction("processing", output=["a"]), job=job)
    assert isinstance(outcome, Stored)
    assert [e.job_id for e in events.stored] == [JOB_ID]
    assert [p.job_id for p in progress.sent] == [JOB_ID]


@pytest.mark.parametrize("status", ["starting", "processing", "succeeded"])
async def test_a_signed_webhook_replayed_against_another_job_is_refused(status: str) -> None:
    """The attack: one signed webhook, its `?job=` changed to a victim's job."""
    body = prediction(status, output=["injected"])
    outcome, events, progress = await ingest(body, job=str(OTHER_JOB))
    assert outcome == Rejected(
        "job_mismatch", "the query parameter 'job' is not the job the signed webhook URL names"
    )
    assert events.stored == []
    assert progress.sent == []


@pytest.mark.parametrize(
    "webhook_url",
    [
        None,
        "https://elsewhere.example/hook",
        "https://hooks.example/api/webhooks/replicate?job=not-a-job",
        "https://hooks.example/api/webhooks/replicate?jobs=1",
    ],
)
async def test_a_signed_webhook_naming_no_job_is_parked(webhook_url: str | None) -> None:
    body = prediction("succeeded", output="x", webhook=webhook_url)
    parking = FakeParking()
    outcome, events, progress = await ingest(body, job=None, parking=parking)
    detail = "the prediction's webhook URL names no job (a prediction made elsewhere)"
    assert outcome == Parked("no_job", detail, "pred-1", duplicate=False)
    assert parking.parked == {"msg_1": (body, "no_job", detail)}
    assert (events.stored, progress.sent) == ([], [])
    again, *_ = await ingest(body, job=None, parking=parking)
    assert again == Parked("no_job", detail, "pred-1", duplicate=True)


async def test_a_job_parameter_on_a_webhook_naming_no_job_is_refused() -> None:
    """`?job=` cannot lend a job to a webhook whose signed URL names none."""
    body = prediction("succeeded", output="x", webhook="https://elsewhere.example/hook")
    parking = FakeParking()
    outcome, events, _ = await ingest(body, job=str(JOB_ID), parking=parking)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "job_mismatch"
    assert (events.stored, parking.parked) == ([], {})


async def test_a_webhook_that_cannot_be_parked_is_unavailable() -> None:
    body = prediction("succeeded", webhook=None)
    outcome, events, _ = await ingest(body, job=None, parking=FakeParking(down=True))
    assert isinstance(outcome, NotStored)
    assert outcome.reason == "parking_unavailable"
    assert events.stored == []


async def test_a_bus_that_cannot_store_is_unavailable() -> None:
    outcome, _, progress = await ingest(
        prediction("processing", output=["a"]), events=FakeEvents(down=True)
    )
    assert isinstance(outcome, NotStored)
    assert outcome.reason == "bus_unavailable"
    assert progress.sent == []


async def test_a_result_too_large_for_the_bus_is_stored_aside() -> None:
    results = FakeResults()
    output = ["x" * 1024] * (MAX_INLINE_OUTPUT_BYTES // 1024 + 1)
    outcome, events, _ = await ingest(prediction("succeeded", output=output), results=results)
    assert isinstance(outcome, Stored)
    (event,) = events.stored
    assert isinstance(event, JobCompleted)
    assert (event.output, event.output_ref) == (None, "output/pred-1")
    assert results.objects == {"output/pred-1": "".join(output)}


async def test_an_output_just_under_the_inline_limit_stays_in_the_event() -> None:
    # The limit counts JSON text: the two quotes are part of it.
    output = "y" * (MAX_INLINE_OUTPUT_BYTES - 2)
    results = FakeResults()
    outcome, events, _ = await ingest(prediction("succeeded", output=output), results=results)
    assert isinstance(outcome, Stored)
    (event,) = events.stored
    assert isinstance(event, JobCompleted)
    assert (event.output, event.output_ref) == (output, None)
    assert results.objects == {}


async def test_escaping_counts_towards_the_inline_limit() -> None:
    # Each control character is six bytes of JSON: this output is small, its event is not.
    output = "\x01" * (MAX_INLINE_OUTPUT_BYTES // 6 + 1)
    outcome, events, _ = await ingest(prediction("succeeded", output=output))
    assert isinstance(outcome, Stored)
    (event,) = events.stored
    assert isinstance(event, JobCompleted)
    assert event.output is None
    assert event.output_ref is not None


async def test_a_result_store_that_cannot_store_stores_no_event() -> None:
    output = "z" * MAX_INLINE_OUTPUT_BYTES
    outcome, events, _ = await ingest(
        prediction("succeeded", output=output), results=FakeResults(down=True)
    )
    assert isinstance(outcome, NotStored)
    assert outcome.reason == "results_unavailable"
    assert events.stored == []


async def test_an_event_stored_aside_that_the_bus_refuses_is_unavailable() -> None:
    results = FakeResults()
    outcome, _, _ = await ingest(
        prediction("succeeded", output="z" * MAX_INLINE_OUTPUT_BYTES),
        events=FakeEvents(down=True),
        results=results,
    )
    assert isinstance(outcome, NotStored)
    assert outcome.reason == "bus_unavailable"


async def test_an_event_too_large_even_without_output_is_not_stored() -> None:
    outcome, events, _ = await ingest(prediction("failed", error="e" * MAX_EVENT_BYTES))
    assert isinstance(outcome, NotStored)
    assert outcome.reason == "too_large_for_bus"
    assert events.stored == []


async def test_a_body_nested_too_deeply_is_rejected_not_a_crash() -> None:
    deep = b'{"id": "p", "status": "succeeded", "output": %s1%s}' % (b"[" * 5000, b"]" * 5000)
    outcome, events, _ = await ingest(deep)
    assert isinstance(outcome, Rejected)
    assert outcome.reason == "not_a_prediction"
    assert events.stored == []


async def test_a_predict_time_beyond_any_float_is_dropped_not_a_crash() -> None:
    body = (
        b'{"id": "p", "status": "succeeded", "webhook": "%s", "metrics": {"predict_time": 1%s}}'
        % (
            hook(JOB_ID).encode(),
            b"0" * 400,
        )
    )
    outcome, events, _ = await ingest(body)
    assert isinstance(outcome, Stored)
    (event,) = events.stored
    assert isinstance(event, JobCompleted)
    assert event.predict_time_s is None


async def offered(body: bytes, output: FakeOutput, webhook_id: str = "msg_1") -> Any:
    outcome = await ingest_webhook(
        webhook(body, webhook_id),
        str(JOB_ID),
        events=FakeEvents(),
        progress=FakeProgress(),
        results=FakeResults(),
        parking=FakeParking(),
        now=NOW,
        output=output,
    )
    assert isinstance(outcome, Stored)
    return outcome.output_offered


async def test_an_output_webhooks_text_is_offered_to_the_log_once() -> None:
    output = FakeOutput()
    assert await offered(prediction("processing", output=["Once ", "up"]), output) is True
    assert await offered(prediction("processing", output=["Once ", "up"]), output) is True
    assert await offered(prediction("processing", output="Once upon"), output, "msg_2") is True
    assert output.logs == {(JOB_ID, "pred-1"): "Once upon"}
    # Neither a final webhook (its output reaches `/output` from the job-store) nor one
    # without text offers anything.
    assert await offered(prediction("succeeded", output="Once upon a time"), output) is None
    assert await offered(prediction("processing", output=[]), output) is None
    assert output.logs == {(JOB_ID, "pred-1"): "Once upon"}


async def test_an_offer_that_fails_or_cannot_be_made_still_answers_stored() -> None:
    assert await offered(prediction("processing", output=["a"]), FakeOutput(down=True)) is False
    dotted = prediction("processing", output=["a"], id="pred.1")
    assert await offered(dotted, FakeOutput()) is None
