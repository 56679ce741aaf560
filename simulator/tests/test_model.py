"""A prediction's state as a pure function of time: every path through its statuses."""

import pytest

from replicate_sim.model import (
    Prediction,
    chunks_at,
    ending,
    logs_at,
    render,
    status_at,
    tokens_written,
)
from replicate_sim.outputs import token_ends

T0 = 1_800_000_000.0
CHUNKS = [f"chunk {i}. " for i in range(10)]


def prediction(**changes: object) -> Prediction:
    fields: dict[str, object] = {
        "id": "p1",
        "seq": 1,
        "model": "google/gemini-3-pro",
        "version": "hidden",
        "input": {"prompt": "tides"},
        "webhook": None,
        "events": frozenset({"completed"}),
        "job": None,
        "created_at": T0,
        "start_at": T0 + 1,
        "end_at": T0 + 11,
        "outcome": "succeeded",
        "aborts": False,
        "chunks": CHUNKS,
        "base_url": "http://sim",
        # Two tokens a chunk, two tokens a second: a chunk a second from the start.
        "tokens_per_s": 2.0,
    }
    fields.update(changes)
    return Prediction(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("at", "status"),
    [
        (0, "starting"),
        (0.99, "starting"),
        (1, "processing"),
        (10.9, "processing"),
        (11, "succeeded"),
        (500, "succeeded"),
    ],
)
def test_a_prediction_starts_then_succeeds(at: float, status: str) -> None:
    assert status_at(prediction(), T0 + at) == status


def test_output_grows_in_chunks_and_is_complete_at_the_end() -> None:
    p = prediction()
    seen = [len(chunks_at(p, T0 + t / 2)) for t in range(0, 25)]
    assert seen == sorted(seen)
    assert chunks_at(p, T0 + 0.5) == []
    assert chunks_at(p, T0 + 6) == CHUNKS[:5]
    assert chunks_at(p, T0 + 11) == CHUNKS


def test_the_output_is_always_the_text_written_so_far() -> None:
    # Canceled 6.75 s after the start: 13 tokens, six chunks and half of the seventh.
    p = prediction(deadline_at=T0 + 7.75)
    text, ends = "".join(CHUNKS), token_ends(CHUNKS)
    for step in range(40):
        now = T0 + step / 4
        written = tokens_written(p, now)
        assert "".join(chunks_at(p, now)) == text[: ends[written - 1] if written else 0]
    assert chunks_at(p, T0 + 100) == [*CHUNKS[:6], "chunk "]


def test_a_success_before_the_text_is_written_writes_the_rest_at_once() -> None:
    p = prediction(tokens_per_s=0.5)
    assert tokens_written(p, T0 + 10.9) == 4
    assert chunks_at(p, T0 + 11) == CHUNKS


def test_a_failing_prediction_ends_failed_with_an_error_and_no_output() -> None:
    p = prediction(outcome="failed")
    body = render(p, T0 + 12)
    assert body["status"] == "failed"
    assert body["error"]
    assert body["output"] is None
    assert render(p, T0 + 5)["error"] is None


def test_an_aborted_prediction_never_starts() -> None:
    p = prediction(aborts=True)
    assert status_at(p, T0 + 5) == "starting"
    assert status_at(p, T0 + 11) == "aborted"
    body = render(p, T0 + 11)
    assert "started_at" not in body
    assert body["output"] is None
    assert "predict_time" not in body["metrics"]


def test_a_deadline_while_running_cancels() -> None:
    p = prediction(deadline_at=T0 + 5)
    assert ending(p) == (T0 + 5, "canceled")
    assert status_at(p, T0 + 4.9) == "processing"
    body = render(p, T0 + 5)
    assert body["status"] == "canceled"
    assert body["output"] == CHUNKS[:4]
    assert body["deadline"].startswith("2027-01-15T08:00:05")


def test_a_deadline_before_the_start_aborts() -> None:
    p = prediction(start_at=T0 + 6, deadline_at=T0 + 5)
    assert ending(p) == (T0 + 5, "aborted")
    assert status_at(p, T0 + 5) == "aborted"


def test_a_cancel_ends_it_now_and_a_deadline_after_the_end_changes_nothing() -> None:
    assert ending(prediction(canceled_at=T0 + 3, deadline_at=T0 + 7)) == (T0 + 3, "canceled")
    assert ending(prediction(canceled_at=T0 + 0.5)) == (T0 + 0.5, "canceled")
    assert ending(prediction(deadline_at=T0 + 60)) == (T0 + 11, "succeeded")


def test_zero_latency_is_over_at_once() -> None:
    p = prediction(start_at=T0, end_at=T0)
    assert status_at(p, T0) == "succeeded"
    assert chunks_at(p, T0) == CHUNKS


def test_removed_data_is_gone_from_the_body() -> None:
    p = prediction(data_removed=True, input={}, chunks=[])
    body = render(p, T0 + 100)
    assert body["data_removed"] is True
    assert body["output"] is None
    assert body["input"] == {}
    assert logs_at(p, T0 + 100) == ""


def test_the_body_carries_what_replicate_shows() -> None:
    body = render(prediction(), T0 + 11)
    assert body["urls"] == {
        "get": "http://sim/v1/predictions/p1",
        "cancel": "http://sim/v1/predictions/p1/cancel",
        "web": "http://sim/p/p1",
    }
    assert body["created_at"] == "2027-01-15T08:00:00.000000Z"
    assert body["completed_at"] == "2027-01-15T08:00:11.000000Z"
    assert body["metrics"] == {"total_time": 11.0, "predict_time": 10.0}
    assert body["logs"].endswith("Prediction succeeded\n")
