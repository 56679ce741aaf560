"""The OpenAPI 3.1 description of the gateway's HTTP API, built from the msgspec types the
handlers decode and encode, so the document cannot drift from the bodies on the wire.

`http.py` serves it at `GET /openapi.json`; `pages.py` has the page rendering it, `GET /docs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from jobs_proto.api import (
    CreateJob,
    JobAccepted,
    JobPage,
    JobProgress,
    JobView,
    Problem,
    ProblemDetail,
)
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.status import JOB_STATUSES
from jobs_runtime.web import PROBLEM_MEDIA_TYPE

OPENAPI_VERSION: Final = "3.1.0"
SCHEMA_REF: Final = "#/components/schemas/{name}"
SECURITY_SCHEME: Final = "bearerAuth"
ACCESS_TOKEN_SCHEME: Final = "accessToken"
JSON: Final = "application/json"
EVENT_STREAM: Final = "text/event-stream"

# What every route that checks a token may answer besides its success, and what a route
# with a body adds (the contract's order: 401, 429, 415, 413, 400, 422, 409). 500 is a bug,
# but a client still receives a problem body for it, so it is declared too.
_AUTHENTICATED: Final = {
    "401": "Missing or invalid token (`WWW-Authenticate: Bearer`).",
    "429": "A per-user limit (`USER_REQUESTS_PER_S`; on creates also `USER_MAX_OPEN_JOBS`); "
    "retry after `Retry-After` seconds.",
    "500": "Unexpected error.",
    "503": "NATS or the job-store is unavailable; retry after `Retry-After` seconds.",
}
# The stream routes' own reading of 429 and 503: they are also refused for open streams.
_STREAMED: Final = {
    **_AUTHENTICATED,
    "429": "A per-user limit (`USER_REQUESTS_PER_S`, or `USER_MAX_STREAMS`: the caller has that "
    "many event and output streams open); retry after `Retry-After` seconds.",
    "503": "NATS or the job-store is unavailable, or this gateway holds `MAX_STREAMS` streams; "
    "retry after `Retry-After` seconds.",
}
_WITH_BODY: Final = {
    "400": "The body is not valid JSON.",
    "413": "The body exceeds the configured limit (`HTTP_MAX_BODY_BYTES`).",
    "415": "`Content-Type` is not `application/json` (UTF-8).",
    "422": "The body is not a valid job (`errors` has one JSON pointer per bad value), or "
    "the `Idempotency-Key` is empty or longer than 255 characters (`errors` names it as "
    "`parameter`).",
    "409": "The `Idempotency-Key` was used with another body, or its first request is still "
    "being admitted (then with `Retry-After`).",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": SCHEMA_REF.format(name=name)}


def _header(description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "schema": dict(schema or {"type": "string"})}


def _problem(description: str, status: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": _ref(Problem.__name__)}},
    }
    if status == "401":
        answer["headers"] = {
            "WWW-Authenticate": _header("`Bearer`, with an error if a token was sent.")
        }
    elif status in ("429", "503"):
        answer["headers"] = {"Retry-After": _header("Seconds to wait.", {"type": "integer"})}
    return answer


def _problems(statuses: Mapping[str, str]) -> dict[str, Any]:
    return {status: _problem(text, status) for status, text in statuses.items()}


def _accepted() -> dict[str, Any]:
    return {
        "description": "Admitted: the job's `JobRequested` is stored; it will be worked on.",
        "headers": {"Location": _header("`/api/jobs/{jobId}` of the new job.")},
        "content": {JSON: {"schema": _ref(JobAccepted.__name__)}},
    }


def _create_body() -> dict[str, Any]:
    # `CreateJob.input` is any object on the wire; which object depends on `type`, so the
    # body is also one of the typed pairs, each naming its job type's own input schema.
    typed = [
        {
            "type": "object",
            "properties": {
                "type": {"const": name},
                "input": _ref(job_type.input_type.__name__),
            },
            "required": ["type", "input"],
        }
        for name, job_type in sorted(JOB_TYPES.items())
    ]
    return {
        "required": True,
        "content": {JSON: {"schema": {"allOf": [_ref(CreateJob.__name__), {"oneOf": typed}]}}},
    }


def _create_operation(summary: str, operation_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": (
                    "Per user, kept 24 hours: the same key with the same body answers the "
                    "first successful answer again (same `jobId`, with "
                    "`Idempotent-Replayed: true`); error answers are not kept."
                ),
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
        "requestBody": body,
        "responses": {"202": _accepted(), **_problems({**_WITH_BODY, **_AUTHENTICATED})},
    }


def _get_operation() -> dict[str, Any]:
    etag = {"ETag": _header("Weak; changes with the job's `version`.")}
    return {
        "summary": "A job, for its owner",
        "operationId": "getJob",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [
            _job_id_parameter(),
            {
                "name": "If-None-Match",
                "in": "header",
                "required": False,
                "description": "An `ETag` of this job; the same version answers `304`.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": {
                "description": "The job.",
                "headers": etag,
                "content": {JSON: {"schema": _ref(JobView.__name__)}},
            },
            "304": {"description": "Unchanged since the `If-None-Match` version.", "headers": etag},
            **_problems(
                {
                    "404": "Unknown job, another user's job, or not a UUID.",
                    "413": "The job's output is larger than one answer of the job system can "
                    "carry (over the 8 MiB message limit); `detail` names its size. The request "
                    "itself was fine: the job's status is in `GET /api/jobs` and its events.",
                    **_AUTHENTICATED,
                }
            ),
        },
    }


def _job_id_parameter() -> dict[str, Any]:
    return {
        "name": "jobId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }


def _list_operation() -> dict[str, Any]:
    # Query parameters are `form` with `explode` by default: an array is the parameter
    # repeated (`?status=pending&status=processing`).
    return {
        "summary": "The caller's jobs, newest first",
        "operationId": "listJobs",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "Most items on a page; a page may hold fewer and still go on.",
                "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "A previous page's `nextCursor`, with the same filters.",
                "schema": {"type": "string"},
            },
            {
                "name": "status",
                "in": "query",
                "required": False,
                "description": "Only jobs in any of these statuses; repeat for several.",
                "schema": {"type": "array", "items": {"enum": list(JOB_STATUSES)}},
            },
            {
                "name": "type",
                "in": "query",
                "required": False,
                "description": "Only jobs of any of these types; repeat for several.",
                "schema": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f]+$"},
                },
            },
        ],
        "responses": {
            "200": {
                "description": "A page; `nextCursor` is null on the last one.",
                "content": {JSON: {"schema": _ref(JobPage.__name__)}},
            },
            **_problems(
                {
                    "400": "The cursor is malformed, or was made for another user or filters.",
                    "422": "A bad query parameter; `errors` names each by `parameter`.",
                    **_AUTHENTICATED,
                }
            ),
        },
    }


_STREAM_FORMAT: Final = (
    "`event: status` carries the job as `GET /api/jobs/{jobId}` answers it "
    "(`JobView`; `output` may be null in a terminal state whose output is too large to "
    "send), `event: progress` carries `JobProgress` (`output`: all the text so far; `seq` "
    "grows). A comment line (`: keepalive`) follows every quiet `SSE_KEEPALIVE_S` (15 s). "
    "When the gateway shuts down the stream ends with `retry: <ms>` so the client reconnects "
    "(to another replica), with `Last-Event-ID`."
)


def _event(name: str, data: str, with_id: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": JSON, "contentSchema": _ref(data)},
        "retry": {"type": "integer", "minimum": 0},
    }
    if with_id:
        properties["id"] = {"type": "string"}
    return {"type": "object", "properties": properties, "required": ["event", "data"]}


def _event_stream(description: str) -> dict[str, Any]:
    # OpenAPI 3.1 has no `itemSchema` (3.2 does): `schema` describes one event, its fields
    # as an `EventSource` sees them, `data` being JSON of the named schema.
    return {
        "description": f"{description} {_STREAM_FORMAT}",
        "headers": {"Cache-Control": _header("`no-cache`.")},
        "content": {
            EVENT_STREAM: {
                "schema": {
                    "oneOf": [
                        _event("status", JobView.__name__, with_id=True),
                        # Progress has no `id:` of its own; a reader that carries the last
                        # one over shows the last status event's.
                        _event("progress", JobProgress.__name__, with_id=True),
                    ]
                }
            }
        },
    }


def _stream_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "description": "The last `id:` the client received (sent by `EventSource` when it "
            "reconnects): what the client has is not sent again.",
            "schema": {"type": "string"},
        },
        {
            "name": "access_token",
            "in": "query",
            "required": False,
            "description": "The token, for `EventSource` (which cannot send headers); used only "
            "without an `Authorization` header, never logged.",
            "schema": {"type": "string"},
        },
    ]


def _job_events_operation() -> dict[str, Any]:
    return {
        "summary": "A job's status changes and partial output, pushed",
        "operationId": "streamJobEvents",
        "security": [{SECURITY_SCHEME: []}, {ACCESS_TOKEN_SCHEME: []}],
        "parameters": [_job_id_parameter(), *_stream_parameters()],
        "responses": {
            "200": _event_stream(
                "The job's events: `id:` is the job's `version`; the current state comes first "
                "(unless `Last-Event-ID` is that version already), then one `status` per change; "
                "the stream closes after the terminal state."
            ),
            "204": {
                "description": "The job is terminal and `Last-Event-ID` is its final version: "
                "nothing will follow (stops `EventSource` reconnecting)."
            },
            **_problems({"404": "Unknown job, another user's job, or not a UUID.", **_STREAMED}),
        },
    }


def _user_events_operation() -> dict[str, Any]:
    return {
        "summary": "Every job of the caller, pushed over one connection",
        "operationId": "streamEvents",
        "security": [{SECURITY_SCHEME: []}, {ACCESS_TOKEN_SCHEME: []}],
        "parameters": _stream_parameters(),
        "responses": {
            "200": _event_stream(
                "First the current state of each of the caller's jobs not yet terminal, then "
                "every change and progress of any of their jobs. `id:` is an opaque position; "
                "with `Last-Event-ID` the stream also sends again the state of the recent jobs "
                "(the 200 newest) changed since then. It does not close by itself."
            ),
            **_problems(_STREAMED),
        },
    }


def _cancel_operation() -> dict[str, Any]:
    return {
        "summary": "Ask to cancel a job",
        "operationId": "cancelJob",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [_job_id_parameter()],
        "responses": {
            "202": {
                "description": (
                    "The cancel is stored (or the job is already `canceled`); the job will end "
                    "`canceled`. The body is the job as it was when asked."
                ),
                "headers": {"Location": _header("`/api/jobs/{jobId}` of the job.")},
                "content": {JSON: {"schema": _ref(JobView.__name__)}},
            },
            **_problems(
                {
                    "404": "Unknown job, another user's job, or not a UUID.",
                    "409": "The job already `succeeded` or `failed`.",
                    **_AUTHENTICATED,
                }
            ),
        },
    }


def component_schemas() -> dict[str, Any]:
    """`components.schemas`: msgspec's JSON Schema (2020-12, which OpenAPI 3.1 uses) of every
    body the API reads or writes, with refs already under `#/components/schemas/`."""
    types: list[Any] = [
        CreateJob,
        JobAccepted,
        JobView,
        JobPage,
        JobProgress,
        Problem,
        ProblemDetail,
    ]
    types += [job_type.input_type for _, job_type in sorted(JOB_TYPES.items())]
    _, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    return components


def openapi_document(ideation_routes: Mapping[str, str]) -> dict[str, Any]:
    """The whole document; `ideation_routes` maps each ideation path to its job type, the
    same table the routes are built from."""
    paths: dict[str, Any] = {
        "/api/jobs": {
            "post": _create_operation("Create a job of any type", "createJob", _create_body()),
            "get": _list_operation(),
        },
        "/api/jobs/{jobId}": {"get": _get_operation()},
        "/api/jobs/{jobId}/cancel": {"post": _cancel_operation()},
        "/api/jobs/{jobId}/events": {"get": _job_events_operation()},
        "/api/events": {"get": _user_events_operation()},
    }
    for path, job_type in ideation_routes.items():
        body = {
            "required": True,
            "content": {JSON: {"schema": _ref(JOB_TYPES[job_type].input_type.__name__)}},
        }
        summary = f"Create a `{job_type}` job; the body is its input"
        operation_id = "create_" + job_type
        paths[path] = {"post": _create_operation(summary, operation_id, body)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "AI jobs gateway",
            "version": "1",
            "description": (
                "Admits AI jobs and answers their status. Errors are RFC 9457 "
                f"`{PROBLEM_MEDIA_TYPE}`; checks run in the order "
                "401, 429, 415, 413, 400, 422, 409."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                ACCESS_TOKEN_SCHEME: {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access_token",
                    "description": "The same JWT, on the two event routes only.",
                },
            },
        },
    }
