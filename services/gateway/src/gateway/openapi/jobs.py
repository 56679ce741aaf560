"""The OpenAPI operations of the job routes: create (any type, or one ideation type), get,
list, history, cancel and job tokens; and the per-type schemas a typed client is generated
from (each type's input and output, and the create body discriminated by `type`)."""

from __future__ import annotations

from typing import Any

from jobs_proto.api import JobAccepted, JobHistory, JobPage, JobToken, JobView
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.status import JOB_STATUSES

from .parts import (
    ACCESS_TOKEN_SCHEME,
    AUTHENTICATED,
    BUDGETED,
    JOB_TOKEN_NOTE,
    JSON,
    SCHEMA_REF,
    SECURITY_SCHEME,
    WITH_BODY,
    header,
    job_id_parameter,
    job_reader,
    problems,
    ref,
)


def _accepted() -> dict[str, Any]:
    return {
        "description": "Admitted: the job's `JobRequested` is stored; it will be worked on.",
        "headers": {"Location": header("`/api/jobs/{jobId}` of the new job.")},
        "content": {JSON: {"schema": ref(JobAccepted.__name__)}},
    }


def type_schema_name(job_type: str, role: str) -> str:
    """`ScriptGenerationInput`, `ScriptGenerationOutput`, `ScriptGenerationJob` for
    `script_generation`: the component names a typed client sees."""
    return "".join(part.capitalize() for part in job_type.split("_")) + role


def job_type_components() -> dict[str, Any]:
    """Per job type: its output (the model's text joined into one string, `output` of the
    job once it succeeded) and its create body (`type` fixed, `input` its input schema, which
    comes from its msgspec Struct); and `CreateJob`, the body of `POST /api/jobs`, one of
    those bodies chosen by `type`."""
    components: dict[str, Any] = {}
    mapping: dict[str, str] = {}
    for name, job_type in sorted(JOB_TYPES.items()):
        input_name = job_type.input_type.__name__
        components[type_schema_name(name, "Output")] = {
            "title": type_schema_name(name, "Output"),
            "description": f"The output of a succeeded `{name}` job: the model's text "
            "joined into one string.",
            "type": "string",
        }
        body = type_schema_name(name, "Job")
        components[body] = {
            "title": body,
            "description": f"Body of `POST /api/jobs` creating a `{name}` job.",
            "type": "object",
            "properties": {"type": {"const": name}, "input": ref(input_name)},
            "required": ["type", "input"],
        }
        mapping[name] = SCHEMA_REF.format(name=body)
    components["CreateJob"] = {
        "title": "CreateJob",
        "description": "Body of `POST /api/jobs`: a job type and its input, by `type`.",
        "oneOf": [{"$ref": target} for target in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return components


def job_type_index() -> dict[str, Any]:
    """`x-job-types`: each job type's input and output component, for a client generator."""
    return {
        name: {
            "input": ref(job_type.input_type.__name__),
            "output": ref(type_schema_name(name, "Output")),
            "createJob": ref(type_schema_name(name, "Job")),
        }
        for name, job_type in sorted(JOB_TYPES.items())
    }


def create_body() -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": ref("CreateJob")}}}


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
        "security": [{SECURITY_SCHEME: []}, {ACCESS_TOKEN_SCHEME: []}],
        "parameters": [
            job_id_parameter(),
            {
                "name": "access_token",
                "in": "query",
                "required": False,
                "description": "A job token for this job, for a page that cannot send headers; "
                "used only without an `Authorization` header, never logged. A session token "
                "here is `401`: it goes in the header.",
                "schema": {"type": "string"},
            },
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
                "description": "The job; `usage` is null until its prediction ends; "
                "`cancelRequested` is true from a cancel request until the job ends."
                + JOB_TOKEN_NOTE,
                "headers": etag,
                "content": {JSON: {"schema": ref(JobView.__name__)}},
            },
            "304": {"description": "Unchanged since the `If-None-Match` version.", "headers": etag},
            **problems(
                job_reader(
                    {
                        "404": "Unknown job, another user's job, or not a UUID.",
                        "413": "The job's output is larger than one answer of the job system "
                        "can carry (over the 8 MiB message limit); `detail` names its size. The "
                        "request itself was fine: the job's status is in `GET /api/jobs` and "
                        "its events.",
                        **AUTHENTICATED,
                    }
                )
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


def job_token_operation() -> dict[str, Any]:
    return {
        "summary": "A short-lived token that reads this one job, for a page to hold",
        "description": "The owner only. The token reads this job alone, its `GET`, `/events` "
        "and `/output` (as `Authorization: Bearer` or, on the stream routes, `access_token`), "
        "until `expiresAt` (`JOB_TOKEN_TTL_S`, default 900 s): any other job answers `404`, "
        "any other route `403`. Ask again for a fresh one before it expires.",
        "operationId": "createJobToken",
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [job_id_parameter()],
        "responses": {
            "200": {
                "description": "The token and when it expires.",
                "headers": {"Cache-Control": header("`no-store`.")},
                "content": {JSON: {"schema": ref(JobToken.__name__)}},
            },
            **problems(
                {
                    "404": "Unknown job, another user's job, or not a UUID.",
                    **AUTHENTICATED,
                }
            ),
        },
    }
