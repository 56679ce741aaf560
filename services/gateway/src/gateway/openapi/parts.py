"""The pieces every operation of the OpenAPI document is built from: references to the
component schemas, headers, and the problem answers each kind of route declares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from jobs_proto.api import Problem
from jobs_proto.problems import PROBLEM_MEDIA_TYPE

OPENAPI_VERSION: Final = "3.1.0"
SCHEMA_REF: Final = "#/components/schemas/{name}"
SECURITY_SCHEME: Final = "bearerAuth"
ACCESS_TOKEN_SCHEME: Final = "accessToken"
JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"

# What every route that checks a token may answer besides its success, and what a route
# with a body adds (the contract's order: 401, 429, 415, 413, 400, 422, 409, 402). 500 is a bug,
# but a client still receives a problem body for it, so it is declared too.
AUTHENTICATED: Final = {
    "401": "Missing or invalid token (`WWW-Authenticate: Bearer`).",
    "403": "A job token (`POST /api/jobs/{jobId}/token`): it reads its own job only.",
    "429": "A per-user limit (`USER_REQUESTS_PER_S`; on creates also `USER_MAX_OPEN_JOBS`); "
    "retry after `Retry-After` seconds.",
    "500": "Unexpected error.",
    "503": "NATS or the job-store is unavailable; retry after `Retry-After` seconds.",
}
# The stream routes' own reading of 429 and 503: they are also refused for open streams.
STREAMED: Final = {
    **AUTHENTICATED,
    "429": "A per-user limit (`USER_REQUESTS_PER_S`, or `USER_MAX_STREAMS`: the caller has that "
    "many event and output streams open); retry after `Retry-After` seconds.",
    "503": "NATS or the job-store is unavailable, or this gateway holds `MAX_STREAMS` streams; "
    "retry after `Retry-After` seconds.",
}
WITH_BODY: Final = {
    "400": "The body is not valid JSON.",
    "413": "The body exceeds the configured limit (`HTTP_MAX_BODY_BYTES`).",
    "415": "`Content-Type` is not `application/json` (UTF-8).",
    "422": "The body is not a valid job (`errors` has one JSON pointer per bad value), or "
    "the `Idempotency-Key` is empty or longer than 255 characters (`errors` names it as "
    "`parameter`).",
    "409": "The `Idempotency-Key` was used with another body, or its first request is still "
    "being admitted (then with `Retry-After`).",
}
# What a create adds: its reservation against the budgets, checked last.
BUDGETED: Final = {
    "402": "Reserving the type's `maxCostUsd` would pass the caller's monthly budget "
    "(`USER_BUDGET_USD` or the token's budget claim) or everyone's day "
    "(`GLOBAL_BUDGET_USD_PER_DAY`): `type` ends in `budget-exceeded`, `limitUsd` is that "
    "budget and `remainingUsd` what is left of it. Nothing was published. An idempotent "
    "replay of an admitted job is never refused so.",
}


# The security of the routes that read one job: a session token, or a job token for that job
# (`404` for any other job), in the header or, on the stream routes, in `access_token`.
JOB_TOKEN_NOTE: Final = (
    " A job token for this job (`POST /api/jobs/{jobId}/token`) reads it too; for another job "
    "it answers `404`."
)


def job_reader(statuses: Mapping[str, str]) -> dict[str, str]:
    """`statuses` of a route a job token opens: never `403`."""
    return {status: text for status, text in statuses.items() if status != "403"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMA_REF.format(name=name)}


def header(description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": dict(schema or {"type": "string"})}


def _problem(description: str, status: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": ref(Problem.__name__)}},
    }
    if status == "401":
        answer["headers"] = {
            "WWW-Authenticate": header("`Bearer`, with an error if a token was sent.")
        }
    elif status in ("429", "503"):
        answer["headers"] = {"Retry-After": header("Seconds to wait.", {"type": "integer"})}
    return answer


def problems(statuses: Mapping[str, str]) -> dict[str, Any]:
    return {status: _problem(text, status) for status, text in statuses.items()}


def job_id_parameter() -> dict[str, Any]:
    return {
        "name": "jobId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
