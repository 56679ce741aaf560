"""From msgspec's validation messages to the contract's `422` entries with JSON pointers."""

import msgspec
import pytest

from gateway.handlers import InvalidRequest, NewJob, parse_create_job, parse_job_input
from gateway.problems import path_to_pointer, validation_detail
from jobs_proto.api import ProblemDetail


@pytest.mark.parametrize(
    ("path", "pointer"),
    [
        ("", ""),
        (".topic", "/topic"),
        (".input.topic", "/input/topic"),
        (".items[0].name", "/items/0/name"),
        ("[12]", "/12"),
        (".a~b.c/d", "/a~0b/c~1d"),
        # `[...]` is a dictionary key msgspec does not name: stop at the dictionary.
        (".input.tags[...]", "/input/tags"),
        (".x[0][...].y", "/x/0"),
    ],
)
def test_msgspec_paths_become_json_pointers(path: str, pointer: str) -> None:
    assert path_to_pointer(path) == pointer


def test_a_bad_value_points_at_itself_under_the_base() -> None:
    detail = validation_detail("Expected `str` of length >= 1 - at `$.topic`", "/input")
    assert detail == ProblemDetail(pointer="/input/topic", detail="must not be empty")


def test_a_missing_field_points_at_the_field() -> None:
    assert validation_detail("Object missing required field `topic`").pointer == "/topic"
    nested = validation_detail("Object missing required field `topic` - at `$.input`")
    assert nested.pointer == "/input/topic"


def test_a_message_without_a_path_points_at_the_base() -> None:
    assert validation_detail("Expected `object`, got `array`", "/input").pointer == "/input"


def test_real_msgspec_errors_map_as_expected() -> None:
    class Inner(msgspec.Struct):
        count: int

    class Outer(msgspec.Struct):
        items: list[Inner]

    with pytest.raises(msgspec.ValidationError) as bad:
        msgspec.convert({"items": [{"count": 1}, {"count": "x"}]}, Outer)
    assert validation_detail(str(bad.value)).pointer == "/items/1/count"


def pointers(body: object, job_type: str | None = None) -> list[str | None]:
    def parse() -> NewJob:
        return parse_create_job(body) if job_type is None else parse_job_input(job_type, body)

    with pytest.raises(InvalidRequest) as refused:
        parse()
    return [e.pointer for e in refused.value.errors]


def test_create_job_pointers() -> None:
    assert pointers({"input": {"topic": "x"}}) == ["/type"]
    assert pointers({"type": "poem", "input": {"topic": "x"}}) == ["/type"]
    assert pointers({"type": 7, "input": {"topic": "x"}}) == ["/type"]
    assert pointers({"type": "video_outline"}) == ["/input"]
    assert pointers({"type": "video_outline", "input": ["topic"]}) == ["/input"]
    assert pointers({"type": "video_outline", "input": {}}) == ["/input/topic"]
    assert pointers({"type": "video_outline", "input": {"topic": ""}}) == ["/input/topic"]
    assert pointers({"type": "video_outline", "input": {"topic": "x", "sections": 0}}) == [
        "/input/sections"
    ]
    assert pointers([1, 2]) == [""]


def test_ideation_pointers_are_into_the_body_itself() -> None:
    assert pointers({}, "script_generation") == ["/topic"]
    assert pointers({"topic": "   "}, "script_generation") == ["/topic"]
    assert pointers({"topic": "x", "durationMinutes": 0}, "script_generation") == [
        "/durationMinutes"
    ]
    assert pointers("topic", "title_generation") == [""]


def test_valid_input_is_published_as_given_in_camel_case_without_unknown_fields() -> None:
    job = parse_create_job(
        {"type": "script_generation", "input": {"topic": "tides", "durationMinutes": 5, "x": 1}}
    )
    assert job == NewJob(
        job_type="script_generation", input={"topic": "tides", "durationMinutes": 5}
    )
    # Defaults are not filled in: the job shows what its owner sent.
    assert parse_job_input("title_generation", {"topic": "t"}).input == {"topic": "t"}
    assert parse_job_input("title_generation", {"topic": "t", "count": 3}).input == {
        "topic": "t",
        "count": 3,
    }
