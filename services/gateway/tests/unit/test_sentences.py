"""`422` details a person can read: each kind of msgspec validation message as a sentence,
checked against the messages msgspec really writes, and on the job types' own inputs."""

from typing import Annotated, Any, Literal

import msgspec
import pytest

from gateway.handlers import InvalidRequest, parse_create_job, parse_job_input
from gateway.problems import validation_detail
from gateway.sentences import field_schema, sentence
from jobs_proto.api import ProblemDetail


class Form(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"\S")] = "x"
    code: Annotated[str, msgspec.Meta(min_length=3, pattern=r"^[A-Z]+$")] = "ABC"
    count: Annotated[int, msgspec.Meta(ge=1, le=200)] = 1
    at_least: Annotated[int, msgspec.Meta(ge=5)] = 5
    ratio: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.5
    step: Annotated[int, msgspec.Meta(multiple_of=5)] = 5
    mode: Literal["fast", "slow"] = "fast"
    maybe: int | None = None
    tags: Annotated[list[str], msgspec.Meta(min_length=1, max_length=2)] = msgspec.field(
        default_factory=lambda: ["a"]
    )
    flag: bool = False
    required: str


SCHEMA = msgspec.json.schema(Form)


def refused(raw: dict[str, Any]) -> ProblemDetail:
    with pytest.raises(msgspec.ValidationError) as bad:
        msgspec.convert({"required": "r", **raw}, Form)
    return validation_detail(str(bad.value), "/input", SCHEMA)


@pytest.mark.parametrize(
    ("raw", "pointer", "detail"),
    [
        ({"name": ""}, "/input/name", "must not be empty"),
        ({"name": "   "}, "/input/name", "must not be empty"),
        ({"name": "x" * 21}, "/input/name", "must be at most 20 characters"),
        ({"name": 7}, "/input/name", "must be a string"),
        ({"name": None}, "/input/name", "must be a string"),
        ({"code": "AB"}, "/input/code", "must be at least 3 characters"),
        ({"code": "abc"}, "/input/code", "must match the pattern ^[A-Z]+$"),
        ({"count": 0}, "/input/count", "must be an integer from 1 to 200"),
        ({"count": 201}, "/input/count", "must be an integer from 1 to 200"),
        ({"count": 1.5}, "/input/count", "must be an integer"),
        ({"count": "3"}, "/input/count", "must be an integer"),
        ({"at_least": 4}, "/input/at_least", "must be an integer of at least 5"),
        ({"ratio": 0}, "/input/ratio", "must be a number greater than 0 and less than 1"),
        ({"step": 7}, "/input/step", "must be a multiple of 5"),
        ({"mode": "medium"}, "/input/mode", "must be one of: fast, slow"),
        ({"maybe": "x"}, "/input/maybe", "must be an integer or null"),
        ({"tags": []}, "/input/tags", "must have at least one item"),
        ({"tags": ["a", "b", "c"]}, "/input/tags", "must be at most 2 items"),
        ({"tags": ["a", 1]}, "/input/tags/1", "must be a string"),
        ({"flag": 1}, "/input/flag", "must be true or false"),
        ({"other": 1}, "/input/other", "is not allowed"),
    ],
)
def test_each_kind_of_error_is_a_sentence_at_its_pointer(
    raw: dict[str, Any], pointer: str, detail: str
) -> None:
    assert refused(raw) == ProblemDetail(pointer=pointer, detail=detail)


def test_a_missing_field_is_required_at_its_own_pointer() -> None:
    with pytest.raises(msgspec.ValidationError) as bad:
        msgspec.convert({}, Form)
    detail = validation_detail(str(bad.value), "/input", SCHEMA)
    assert detail == ProblemDetail(pointer="/input/required", detail="is required")


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        # Without the field's schema a sentence names the bound the message names.
        ("Expected `int` >= 1", "must be an integer of at least 1"),
        ("Expected `int` <= 200", "must be an integer of at most 200"),
        ("Expected `float` > 0.0", "must be a number greater than 0"),
        ("Expected `float` < 1.5", "must be a number less than 1.5"),
        ("Invalid enum value 'z'", "is not one of the allowed values (got 'z')"),
        ("Expected `str` of length >= 1", "must not be empty"),
        ("Expected `str` of length <= 1", "must be at most 1 character"),
        ("Expected `object`, got `array`", "must be an object"),
        ("Expected `datetime`, got `int`", "must be a date and time (RFC 3339)"),
        # A kind not known here is kept rather than lost.
        ("Invalid RFC3339 encoded datetime", "Invalid RFC3339 encoded datetime"),
    ],
)
def test_sentences_without_a_schema(message: str, detail: str) -> None:
    assert sentence(message) == detail


def test_field_schema_follows_refs_and_optional_values() -> None:
    assert field_schema(SCHEMA, "/maybe") == {"type": "integer"}
    assert field_schema(SCHEMA, "/tags/0") == {"type": "string"}
    assert field_schema(SCHEMA, "/nowhere") == {}
    assert field_schema(SCHEMA, "")["title"] == "Form"


@pytest.mark.parametrize(
    ("job_type", "body", "pointer", "detail"),
    [
        ("script_generation", {}, "/topic", "is required"),
        ("script_generation", {"topic": ""}, "/topic", "must not be empty"),
        ("script_generation", {"topic": " \n"}, "/topic", "must not be empty"),
        ("script_generation", {"topic": "x" * 2001}, "/topic", "must be at most 2000 characters"),
        ("script_generation", {"topic": 5}, "/topic", "must be a string"),
        (
            "script_generation",
            {"topic": "t", "durationMinutes": 0},
            "/durationMinutes",
            "must be an integer from 1 to 120",
        ),
        (
            "title_generation",
            {"topic": "t", "count": 51},
            "/count",
            "must be an integer from 1 to 50",
        ),
        ("video_outline", [], "", "must be an object"),
    ],
)
def test_the_job_types_inputs_read_as_sentences(
    job_type: str, body: object, pointer: str, detail: str
) -> None:
    with pytest.raises(InvalidRequest) as bad:
        parse_job_input(job_type, body)
    assert bad.value.errors == [ProblemDetail(pointer=pointer, detail=detail)]


def test_the_create_body_reads_as_sentences_under_input() -> None:
    with pytest.raises(InvalidRequest) as bad:
        parse_create_job({"type": "script_generation", "input": {"topic": ""}})
    assert bad.value.errors == [ProblemDetail(pointer="/input/topic", detail="must not be empty")]
    with pytest.raises(InvalidRequest) as bad:
        parse_create_job({"input": {}})
    assert bad.value.errors == [ProblemDetail(pointer="/type", detail="is required")]
