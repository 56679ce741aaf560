"""A job right after admission: its view, and the input cut down to what is stored."""

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs_proto.events import JobRequested
from jobs_proto.pending import MAX_INPUT_BYTES, bounded_input, pending_view

JOB = uuid.UUID("2f1c7a52-8a4e-4f51-9a57-5e3a1d2b9c01")


def _requested(job_input: dict[str, Any], at: datetime) -> JobRequested:
    return JobRequested(
        job_id=JOB, occurred_at=at, user_id="ada", job_type="title_generation", input=job_input
    )


def test_the_view_is_pending_at_version_1_with_the_input_sent() -> None:
    at = datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)
    view = pending_view(_requested({"topic": "tides", "count": 3}, at))
    assert (view.job_id, view.type, view.status, view.version) == (
        JOB,
        "title_generation",
        "pending",
        1,
    )
    assert view.input == {"topic": "tides", "count": 3}
    assert (view.created_at, view.updated_at) == (at, at)
    assert (view.output, view.error, view.prediction_id, view.completed_at) == (None,) * 4


def test_a_naive_timestamp_reads_as_utc() -> None:
    view = pending_view(_requested({}, datetime(2026, 12, 7, 1, 2, 3)))
    assert view.created_at == datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC)


def test_an_input_over_the_limit_is_shown_as_stored() -> None:
    sent = {"topic": "tides", "context": "ü\n" * MAX_INPUT_BYTES, "tone": "calm"}
    view = pending_view(_requested(sent, datetime(2026, 12, 7, tzinfo=UTC)))
    assert view.input == bounded_input(sent)[0]
    assert len(msgspec.json.encode(view.input)) <= MAX_INPUT_BYTES
    # What fits is kept in order: whole fields first, then the start of the one cut.
    assert view.input["topic"] == "tides"
    assert sent["context"].startswith(view.input["context"])
    assert len(view.input["context"]) > MAX_INPUT_BYTES // 4
    assert "tone" not in view.input


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.text(max_size=3000), st.integers(), st.lists(st.text(max_size=500))),
        max_size=8,
    ),
    st.integers(min_value=64, max_value=4000),
)
@settings(max_examples=200, deadline=None)
def test_a_cut_down_input_always_fits_and_is_the_same_every_time(
    sent: dict[str, object], limit: int
) -> None:
    stored, truncated = bounded_input(sent, limit)
    assert truncated == (len(msgspec.json.encode(sent)) > limit)
    if truncated:
        assert len(msgspec.json.encode(stored)) <= limit
    assert bounded_input(sent, limit) == (stored, truncated)
