"""Hostile bytes decode to one error, `msgspec.DecodeError`, through every decoder built on
`jobs_proto.wire`: the bare JSON decoder, predictions from Replicate and events from the bus."""

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs_proto.events import JobRequested, decode_event, encode_event
from jobs_proto.replicate import decode_prediction
from jobs_proto.wire import decode_json

# Each raised something else before: a `UnicodeDecodeError` (bytes in a string that are not
# UTF-8) or a `RecursionError` (nesting past msgspec's limit of about a thousand).
HOSTILE = [
    b'{"id": "\xff", "status": "succeeded"}',
    b'{"id": "\xed\xa0\x80", "status": "succeeded"}',
    b'{"id": "p", "status": "succeeded", "output": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"id": "p", "status": "succeeded", "output": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001,
]


@pytest.mark.parametrize("body", HOSTILE)
@pytest.mark.parametrize("decode", [decode_json, decode_prediction, decode_event])
def test_hostile_bytes_are_a_decode_error(body: bytes, decode: Callable[[bytes], object]) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode(body)


def test_good_bytes_decode_as_before() -> None:
    assert decode_json(b'{"a": [1, "\xc3\xa9"]}') == {"a": [1, "é"]}
    event = JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=datetime(2030, 1, 2, tzinfo=UTC),
        user_id="u",
        job_type="title_generation",
        input={"topic": "t"},
    )
    assert decode_event(encode_event(event)) == event


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError):
        decode_json(data)
