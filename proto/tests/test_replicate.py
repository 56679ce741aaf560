import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from jobs_proto.replicate import (
    completed_event,
    decode_prediction,
    joined_output,
    webhook_job_id,
    webhook_traceparent,
)
from jobs_proto.subjects import message_id


def test_a_webhook_body_parses_with_aborted_and_unknown_fields() -> None:
    body = (
        b'{"id":"p1","status":"aborted","output":null,"error":null,"data_removed":false,'
        b'"urls":{"get":"http://x/v1/predictions/p1","cancel":"c","web":"w"},"deadline":"d",'
        b'"metrics":{"predict_time":1.25}}'
    )
    prediction = decode_prediction(body)
    assert prediction.status == "aborted"
    assert prediction.is_final
    assert prediction.predict_time_s == 1.25
    assert prediction.urls is not None
    assert prediction.urls.get == "http://x/v1/predictions/p1"


def test_an_absurd_predict_time_is_dropped_not_raised() -> None:
    body = b'{"id":"p1","status":"succeeded","metrics":{"predict_time":' + b"9" * 400 + b"}}"
    assert decode_prediction(body).predict_time_s is None


@pytest.mark.parametrize(
    "body", [b"{}", b'{"id":"p1"}', b'{"id":"p1","status":"exploded"}', b"[1]", b"not json"]
)
def test_what_is_not_a_prediction_is_refused(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_prediction(body)


@pytest.mark.parametrize(
    ("output", "text"),
    [
        (None, None),
        (["Once ", "upon ", "a tide."], "Once upon a tide."),
        ([], ""),
        ("whole text", "whole text"),
        ({"title": "x"}, '{"title":"x"}'),
        (["a", 1], '["a",1]'),
    ],
)
def test_output_is_joined_into_text(output: object, text: str | None) -> None:
    assert joined_output(output) == text


def test_a_finished_prediction_makes_the_completed_event_a_poll_publishes() -> None:
    job_id, at = uuid.uuid4(), datetime(2025, 1, 1, tzinfo=UTC)
    body = b'{"id":"p1","status":"succeeded","data_removed":true,"metrics":{"predict_time":2}}'
    event = completed_event(decode_prediction(body), job_id, at, output=None)
    assert event is not None
    assert (event.prediction_status, event.data_removed, event.predict_time_s) == (
        "succeeded",
        True,
        2.0,
    )
    assert message_id(event) == "completed:p1"
    running = decode_prediction(b'{"id":"p2","status":"processing"}')
    assert completed_event(running, job_id, at, output=None) is None


JOB = uuid.UUID("0b7c6d0e-5a3f-4f57-9a53-2f1d3c7e9b21")


def test_the_webhook_field_is_read_from_the_body() -> None:
    body = b'{"id":"p1","status":"starting","webhook":"https://h.example/hook?job=' + (
        str(JOB).encode() + b'","webhook_events_filter":["start","completed"]}'
    )
    prediction = decode_prediction(body)
    assert prediction.webhook == f"https://h.example/hook?job={JOB}"
    assert webhook_job_id(prediction.webhook) == JOB


@pytest.mark.parametrize(
    ("url", "job"),
    [
        (f"https://h.example/hook?job={JOB}", JOB),
        (f"https://h.example/hook?env=dev&job={str(JOB).upper()}#frag", JOB),
        # The first `job` is the one: the ai-runner replaces any that the configured URL had.
        (f"https://h.example/hook?job={JOB}&job={uuid.UUID(int=1)}", JOB),
        (None, None),
        ("", None),
        ("https://h.example/hook", None),
        ("https://h.example/hook?jobs=1&other=2", None),
        ("https://h.example/hook?job=", None),
        ("https://h.example/hook?job=job-42", None),
        (f"https://h.example/hook#job={JOB}", None),
        ("http://[::1/hook?job=x", None),
    ],
)
def test_the_job_a_webhook_url_names(url: str | None, job: uuid.UUID | None) -> None:
    assert webhook_job_id(url) == job


@pytest.mark.parametrize(
    ("url", "traceparent"),
    [
        (None, None),
        ("https://h/hook?job=x", None),
        ("https://h/hook?job=x&traceparent=00-a-b-01", "00-a-b-01"),
        # The first one counts, as for `job`; the reader checks its form.
        ("https://h/hook?traceparent=first&traceparent=second", "first"),
        ("http://[::1/hook?traceparent=x", None),
    ],
)
def test_the_traceparent_a_webhook_url_carries(url: str | None, traceparent: str | None) -> None:
    assert webhook_traceparent(url) == traceparent
