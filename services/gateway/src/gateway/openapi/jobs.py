"""The OpenAPI operations of the job routes: create (any type, or one ideation type), get,
list, history and cancel."""

from __future__ import annotations

from typing import Any

from jobs_proto.api import CreateJob, JobAccepted, JobHistory, JobPage, JobView
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.status import JOB_STATUSES

from .parts import (
    AUTHENTICATED,
    BUDGETED,
    JSON,
    SECURITY_SCHEME,
    WITH_BODY,
    header,
    job_id_parameter,
    problems,
    ref,
)


def _accepted() -> dict[str, Any]:
    return {
        "description": "Admitted: the job's `JobRequested` is stored; it will be worked on.",
        "headers": {"Location": header("`/api/jobs/{jobId}` of the new job.")},
        "content": {JSON: {"schema": ref(JobAccepted.__name__)}},
    }


def create_body() -> dict[str, Any]:
    # `CreateJob.input` is any object on the wire; which object depends on `type`, so the
    # body is also one of the typed pairs, each naming its job type's own input schema.
    typed = [
        {
            "type": "object",
            "properties": {
                "type": {"const": name},
                "input": ref(job_type.input_type.__name__),
            },
            "required": ["type", "input"],
        }
        for name, job_type in sorted(JOB_TYPES.items())
    ]
    return {
        "required": True,
        "content": {JSON: {"schema": {"allOf": [ref(CreateJob.__name__), {"oneOf": typed}]}}},
    }


def create_operation(summary: str, operation_id: str, body: dict[str, Any]) -> dict[str, Any]:
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
        "responses": {
            "202": _accepted(),
            **problems({**WITH_BODY, **BUDGETED, **AUTHENTICATED}),
        },
    }


def get_operation() -> dict[str, Any]:
    etag = {"ETag": header("Weak; changes with the job's `version`.")}
    return {
        "summary": "A job, for its owner",
        "operationId": "getJob",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [
            job_id_parameter(),
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
                "description": "The job; `usage` is null until its prediction ends.",
                "headers": etag,
                "content": {JSON: {"schema": ref(JobView.__name__)}},
            },
            "304": {"description": "Unchanged since the `If-None-Match` version.", "headers": etag},
            **problems(
                {
                    "404": "Unknown job, another user's job, or not a UUID.",
                    "413": "The job's output is larger than one answer of the job system can "
                    "carry (over the 8 MiB message limit); `detail` names its size. The request "
                    "itself was fine: the job's status is in `GET /api/jobs` and its events.",
                    **AUTHENTICATED,
                }
            ),
        },
    }


def list_operation() -> dict[str, Any]:
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
                "content": {JSON: {"schema": ref(JobPage.__name__)}},
            },
            **problems(
                {
                    "400": "The cursor is malformed, or was made for another user or filters.",
                    "422": "A bad query parameter; `errors` names each by `parameter`.",
                    **AUTHENTICATED,
                }
            ),
        },
    }


def history_operation() -> dict[str, Any]:
    return {
        "summary": "A job's history, for its owner: every change the job-store applied",
        "operationId": "getJobHistory",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [
            job_id_parameter(),
            {
                "name": "limit",
                "in": "query",
                "required": False,
                "description": "Most entries in one answer; one may hold fewer and still go on.",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
            },
            {
                "name": "cursor",
                "in": "query",
                "required": False,
                "description": "A previous answer's `nextCursor`, for the entries after it.",
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "200": {
                "description": (
                    "Entries oldest first (by `seq`, the job's version each produced; never "
                    "null here); `truncated` when more follow, and `nextCursor` then asks "
                    "for them. A job just created may not have one yet (`404`)."
                ),
                "content": {JSON: {"schema": ref(JobHistory.__name__)}},
            },
            **problems(
                {
                    "400": "The cursor is not one of this history's.",
                    "404": "Unknown job, another user's job, or not a UUID.",
                    "422": "A bad query parameter; `errors` names each by `parameter`.",
                    **AUTHENTICATED,
                }
            ),
        },
    }


def cancel_operation() -> dict[str, Any]:
    return {
        "summary": "Ask to cancel a job",
        "operationId": "cancelJob",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [job_id_parameter()],
        "responses": {
            "202": {
                "description": (
                    "The cancel is stored (or the job is already `canceled`); the job will end "
                    "`canceled`. The body is the job as it was when asked."
                ),
                "headers": {"Location": header("`/api/jobs/{jobId}` of the job.")},
                "content": {JSON: {"schema": ref(JobView.__name__)}},
            },
            **problems(
                {
                    "404": "Unknown job, another user's job, or not a UUID.",
                    "409": "The job already `succeeded` or `failed`.",
                    **AUTHENTICATED,
                }
            ),
        },
    }
