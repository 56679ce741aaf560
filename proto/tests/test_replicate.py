import msgspec
import pytest

from jobs_proto.replicate import decode_prediction, joined_output


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
