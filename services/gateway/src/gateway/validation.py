"""What makes a request a job or a query: a body validated as a job type's input, the
queries of `GET /api/jobs` and `GET /api/jobs/{jobId}/history`, the `Idempotency-Key`
header. Each refusal is `InvalidRequest` (`422`), naming the body's pointer or the
parameter. Pure: no I/O; the handlers take what passes.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from jobs_proto.api import CreateJob, GetJobHistory, ListJobs, ProblemDetail
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.status import JOB_STATUSES, JobStatus

# Relative, as in `handlers.py` (which `mypy --strict` names after its path).
from .problems import validation_detail

# `GET /api/jobs?limit=`: the bounds of `ListJobs.limit`, and its default.
MIN_LIMIT: Final = 1
MAX_LIMIT: Final = 200
DEFAULT_LIMIT: Final = 50
# `GET /api/jobs/{jobId}/history?limit=`: the bounds of `GetJobHistory.limit`; the default is
# the most, as a job's whole history is usually a handful of entries.
MAX_HISTORY_LIMIT: Final = 1000
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
# More significant digits than any bound of a query parameter has: out of range without
# `int`, which refuses strings past 4,300 digits (a `ValueError`) and is slow long before.
_MAX_DIGITS: Final = 9
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# `Idempotency-Key`: 1 to 255 characters (the contract's bound).
MAX_IDEMPOTENCY_KEY: Final = 255

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"


def where(error: ProblemDetail) -> str:
    """What an error names: its JSON pointer into the body, or its query parameter."""
    if error.pointer is not None:
        return error.pointer
    return f"?{error.parameter}"


class InvalidRequest(Exception):
    """A body that is well-formed JSON but not an acceptable job, or bad query parameters
    (`422`)."""

    def __init__(
        self, errors: list[ProblemDetail], detail: str = "the request is not a valid job"
    ) -> None:
        super().__init__("; ".join(f"{where(e)}: {e.detail}" for e in errors))
        self.errors = errors
        self.detail = detail


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job that passed validation: its type and its input as plain camelCase JSON values."""

    job_type: str
    input: dict[str, Any]


@functools.cache
def input_schema(job_type: str) -> dict[str, Any]:
    """The JSON Schema of `job_type`'s input, for the bounds a `422` sentence names."""
    schema: dict[str, Any] = msgspec.json.schema(JOB_TYPES[job_type].input_type)
    return schema


def parse_job_input(job_type: str, raw: object, at: str = "") -> NewJob:
    """Validate `raw` as the input of `job_type`; pointers in errors are under `at`.

    The published input holds the fields the client gave, as validated and in their camelCase
    wire names; unknown fields are dropped, and defaults are left to whoever parses it again
    (`JobType.parse_input`), so a job shows the input its owner sent.
    """
    if not isinstance(raw, dict):
        raise InvalidRequest([ProblemDetail(pointer=at, detail="must be an object")])
    try:
        parsed = JOB_TYPES[job_type].parse_input(raw)
    except msgspec.ValidationError as exc:
        detail = validation_detail(str(exc), at, input_schema(job_type))
        raise InvalidRequest([detail]) from None
    validated: dict[str, Any] = msgspec.to_builtins(parsed)
    return NewJob(job_type=job_type, input={k: v for k, v in validated.items() if k in raw})


def parse_create_job(body: object) -> NewJob:
    """Validate the body of `POST /api/jobs`: a known `type` and its `input`."""
    try:
        create = msgspec.convert(body, CreateJob)
    except msgspec.ValidationError as exc:
        raise InvalidRequest([validation_detail(str(exc))]) from None
    if create.type not in JOB_TYPES:
        known = ", ".join(sorted(JOB_TYPES))
        detail = f"unknown job type {create.type!r}; one of: {known}"
        raise InvalidRequest([ProblemDetail(pointer="/type", detail=detail)])
    return parse_job_input(create.type, create.input, at="/input")


def check_idempotency_key(raw: str | None) -> str | None:
    """The `Idempotency-Key` header, or `None` without one; `422` naming it when empty or
    longer than 255 characters."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_IDEMPOTENCY_KEY:
        detail = f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters, got {len(raw)}"
        raise InvalidRequest(
            [ProblemDetail(parameter=IDEMPOTENCY_HEADER, detail=detail)],
            f"the {IDEMPOTENCY_HEADER} header is not valid",
        )
    return raw


def _parameter_error(parameter: str, detail: str) -> ProblemDetail:
    return ProblemDetail(parameter=parameter, detail=detail)


def _parse_limit(
    values: list[str],
    errors: list[ProblemDetail],
    *,
    most: int = MAX_LIMIT,
    default: int = DEFAULT_LIMIT,
) -> int:
    if not values:
        return default
    if len(values) > 1:
        errors.append(_parameter_error("limit", "give `limit` at most once"))
        return default
    raw = values[0].strip()
    if not _INTEGER.fullmatch(raw):
        detail = f"must be an integer from {MIN_LIMIT} to {most}, got {values[0][:40]!r}"
        errors.append(_parameter_error("limit", detail))
        return default
    # Leading zeros count towards `int`'s limit too, so only the significant digits reach it.
    digits = raw.lstrip("+-").lstrip("0") or "0"
    sign = -1 if raw.startswith("-") else 1
    limit = sign * int(digits) if len(digits) <= _MAX_DIGITS else None
    if limit is None or not MIN_LIMIT <= limit <= most:
        shown = limit if limit is not None else f"a number of {len(digits)} digits"
        detail = f"must be an integer from {MIN_LIMIT} to {most}, got {shown}"
        errors.append(_parameter_error("limit", detail))
        return default
    return limit


def _parse_cursor(values: list[str], errors: list[ProblemDetail]) -> str | None:
    # Opaque here: whether it is good only the job-store can tell (`BadCursor`). An empty
    # `cursor=` is the first page, as if absent.
    if len(values) > 1:
        errors.append(_parameter_error("cursor", "give `cursor` at most once"))
    return values[0] if len(values) == 1 and values[0] else None


def _given(parameters: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    given: dict[str, list[str]] = {}
    for name, value in parameters:
        given.setdefault(name, []).append(value)
    return given


def parse_list_query(user_id: str, parameters: Iterable[tuple[str, str]]) -> ListJobs:
    """The query of `GET /api/jobs` as a `ListJobs` of `user_id`'s jobs; every bad parameter
    is one `422` entry naming it. Parameters the route does not know are ignored.

    `cursor` is opaque here: whether it is good only the job-store can tell (`BadCursor`).
    An empty `cursor=` is the first page, as if absent.
    """
    given = _given(parameters)
    errors: list[ProblemDetail] = []
    limit = _parse_limit(given.get("limit", []), errors)
    cursor = _parse_cursor(given.get("cursor", []), errors)
    statuses: list[JobStatus] = []
    for value in given.get("status", []):
        status = next((s for s in JOB_STATUSES if s == value), None)
        if status is None:
            known = ", ".join(JOB_STATUSES)
            errors.append(_parameter_error("status", f"unknown status {value!r}; one of: {known}"))
        elif status not in statuses:
            statuses.append(status)
    types: list[str] = []
    for value in given.get("type", []):
        if not value:
            errors.append(_parameter_error("type", "must not be empty"))
        elif _CONTROL.search(value):
            # No job type has one, and Postgres refuses NUL in text: found by fuzzing.
            errors.append(_parameter_error("type", "must not contain control characters"))
        elif value not in types:
            # Not checked against this release's job types: a job of a type since retired
            # is still its owner's, and filtering for it finds it.
            types.append(value)
    if errors:
        raise InvalidRequest(errors, "the query parameters are not valid")
    return ListJobs(user_id=user_id, limit=limit, cursor=cursor, statuses=statuses, types=types)


def parse_history_query(
    user_id: str, job_id: uuid.UUID, parameters: Iterable[tuple[str, str]]
) -> GetJobHistory:
    """The query of `GET /api/jobs/{jobId}/history` as a `GetJobHistory` of `user_id`'s job:
    `limit` 1 to 1000 (default 1000) and an opaque `cursor`, as in `parse_list_query`; every
    bad parameter is one `422` entry naming it, others are ignored."""
    given = _given(parameters)
    errors: list[ProblemDetail] = []
    limit = _parse_limit(
        given.get("limit", []), errors, most=MAX_HISTORY_LIMIT, default=MAX_HISTORY_LIMIT
    )
    cursor = _parse_cursor(given.get("cursor", []), errors)
    if errors:
        raise InvalidRequest(errors, "the query parameters are not valid")
    return GetJobHistory(job_id=job_id, user_id=user_id, cursor=cursor, limit=limit)
