"""The HTTP adapter's pure checks: content type, job ids in paths, ETags."""

import uuid
from datetime import UTC, datetime

import pytest

from gateway.adapters.http import (
    Refusal,
    check_content_type,
    decode_json,
    etag,
    etag_matches,
    parse_job_id,
)
from jobs_proto.events import JobRequested
from jobs_proto.pending import pending_view


@pytest.mark.parametrize(
    "value",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        'application/json;charset="UTF-8"',
    ],
)
def test_json_with_parameters_is_accepted(value: str) -> None:
    check_content_type(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "text/plain",
        "application/jsonx",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ],
)
def test_anything_else_is_unsupported(value: str | None) -> None:
    with pytest.raises(Refusal) as refused:
        check_content_type(value)
    assert refused.value.problem.status == 415


def test_only_canonical_uuids_are_job_ids() -> None:
    job_id = uuid.uuid4()
    assert parse_job_id(str(job_id)) == job_id
    assert parse_job_id(str(job_id).upper()) == job_id
    for raw in ("not-a-uuid", job_id.hex, f"{{{job_id}}}", f"urn:uuid:{job_id}", ""):
        assert parse_job_id(raw) is None


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00", " "])
def test_a_job_id_with_anything_after_it_is_none(suffix: str) -> None:
    # `$` matches before a trailing newline: `<id>\n` reached `uuid.UUID` and answered 500.
    assert parse_job_id(f"{uuid.uuid4()}{suffix}") is None


@pytest.mark.parametrize(
    "body",
    [
        b'{"type": "\xff"}',  # not UTF-8 inside a string: msgspec's UnicodeDecodeError
        b'{"type": "\xed\xa0\x80"}',  # an encoded surrogate, not UTF-8 either
        b"[" * 5000,  # past msgspec's nesting limit: its RecursionError
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ],
)
def test_every_undecodable_body_is_malformed_json(body: bytes) -> None:
    with pytest.raises(Refusal) as refused:
        decode_json(body)
    assert refused.value.problem.status == 400


def test_etags_are_weak_and_change_with_the_version() -> None:
    event = JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        user_id="u",
        job_type="title_generation",
        input={"topic": "t"},
    )
    view = pending_view(event)
    tag = etag(view)
    assert tag == f'W/"{view.job_id}.1"'
    assert etag_matches(tag, tag)
    assert etag_matches(tag.removeprefix("W/"), tag)
    assert etag_matches(f'"other", {tag}', tag)
    assert etag_matches("*", tag)
    assert not etag_matches(None, tag)
    assert not etag_matches(f'W/"{view.job_id}.2"', tag)
