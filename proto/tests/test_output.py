"""The output log's pure rules: what of an offered text is new, how a text is cut into chunks,
and the subjects and message ids that keep one prediction's text apart from another's."""

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs_proto.output import (
    OutputChunk,
    OutputGap,
    OutputWanted,
    beyond,
    chunk_message_id,
    decode_chunk,
    decode_wanted,
    encode_chunk,
    encode_wanted,
    output_stream,
    pieces,
)
from jobs_proto.subjects import SubjectError, Subjects


def test_beyond_keeps_only_what_is_not_held() -> None:
    assert beyond(0, "hello", 0) == "hello"
    assert beyond(0, "hello", 3) == "lo"
    assert beyond(2, "llo", 3) == "lo"
    assert beyond(0, "hello", 5) == ""
    assert beyond(0, "hel", 5) == ""
    with pytest.raises(OutputGap):
        beyond(4, "o", 3)


@given(st.text(), st.integers(min_value=1, max_value=50))
def test_pieces_join_back_and_follow_on(text: str, max_chars: int) -> None:
    chunks = list(pieces(7, text, max_chars))
    assert "".join(c.text for c in chunks) == text
    end = 7
    for chunk in chunks:
        assert chunk.offset == end
        assert 0 < len(chunk.text) <= max_chars
        end = chunk.end


@given(st.text(), st.data())
def test_offering_every_prefix_rebuilds_the_text(text: str, data: st.DataObject) -> None:
    """Writers offering overlapping prefixes in any order of growth append each character once."""
    held = ""
    cuts = sorted([*data.draw(st.lists(st.integers(0, len(text)), max_size=8)), len(text)])
    for cut in cuts:
        start = data.draw(st.integers(0, min(cut, len(held))))
        held += beyond(start, text[start:cut], len(held))
    assert held == text


def test_chunks_round_trip_with_code_point_offsets() -> None:
    chunk = OutputChunk(offset=3, text="é🌍\nx")
    assert chunk.end == 7
    assert decode_chunk(encode_chunk(chunk)) == chunk


def test_subjects_keep_predictions_apart() -> None:
    subjects = Subjects("t1.")
    job = uuid.uuid4()
    assert subjects.output(job, "abc123") == f"t1.job_output.{job}.abc123"
    assert subjects.all_output == "t1.job_output.>"
    for bad in ("a.b", "a b", "*", ">", ""):
        with pytest.raises(SubjectError):
            subjects.output(job, bad)
    assert chunk_message_id("abc123", 40) == "output:abc123:40"


def test_the_log_outlives_the_longest_job() -> None:
    spec = output_stream(Subjects(), "JOBS", longest_deadline_s=600, replicas=3)
    assert spec.name == "JOBS_OUTPUT"
    assert spec.subjects == ("job_output.>",)
    assert spec.max_age_s >= 600 + 3600
    assert spec.replicas == 3
    assert spec.allow_direct
    assert spec.max_bytes > 0


def test_a_wanted_output_names_the_job_and_its_prediction() -> None:
    job = uuid.uuid4()
    wanted = OutputWanted(job_id=job, prediction_id="abc")
    assert decode_wanted(encode_wanted(wanted)) == wanted
    assert Subjects("t1.").output_wanted(job) == f"t1.job_output_wanted.{job}"
    assert Subjects("t1.").all_output_wanted == "t1.job_output_wanted.>"
