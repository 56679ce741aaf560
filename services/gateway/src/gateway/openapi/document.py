"""The OpenAPI 3.1 description of the gateway's HTTP API, built from the msgspec types the
handlers decode and encode, so the document cannot drift from the bodies on the wire.

Pure: `adapters/http/site.py` serves it at `GET /openapi.json` and the page rendering it,
`GET /docs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from jobs_proto.api import (
    JobAccepted,
    JobHistory,
    JobPage,
    JobProgress,
    JobToken,
    JobTypeList,
    JobView,
    OutputDone,
    OutputText,
    Problem,
    ProblemDetail,
    UsageView,
)
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.problems import PROBLEM_MEDIA_TYPE

from .events import job_events_operation, job_output_operation, user_events_operation
from .jobs import (
    cancel_operation,
    create_body,
    create_operation,
    get_operation,
    history_operation,
    job_token_operation,
    job_type_components,
    job_type_index,
    list_operation,
    type_schema_name,
)
from .parts import (
    ACCESS_TOKEN_SCHEME,
    JSON,
    OPENAPI_VERSION,
    SCHEMA_REF,
    SECURITY_SCHEME,
    ref,
)
from .spend import job_types_operation, usage_operation


def component_schemas() -> dict[str, Any]:
    """`components.schemas`: msgspec's JSON Schema (2020-12, which OpenAPI 3.1 uses) of every
    body the API reads or writes, with refs already under `#/components/schemas/`."""
    types: list[Any] = [
        JobAccepted,
        JobToken,
        JobView,
        JobPage,
        JobHistory,
        JobProgress,
        OutputText,
        OutputDone,
        Problem,
        ProblemDetail,
        JobTypeList,
        UsageView,
    ]
    types += [job_type.input_type for _, job_type in sorted(JOB_TYPES.items())]
    _, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    return {**components, **job_type_components()}


def openapi_document(ideation_routes: Mapping[str, str]) -> dict[str, Any]:
    """The whole document; `ideation_routes` maps each ideation path to its job type, the
    same table the routes are built from."""
    paths: dict[str, Any] = {
        "/api/jobs": {
            "post": create_operation("Create a job of any type", "createJob", create_body()),
            "get": list_operation(),
        },
        "/api/jobs/{jobId}": {"get": get_operation()},
        "/api/jobs/{jobId}/history": {"get": history_operation()},
        "/api/jobs/{jobId}/cancel": {"post": cancel_operation()},
        "/api/jobs/{jobId}/token": {"post": job_token_operation()},
        "/api/jobs/{jobId}/events": {"get": job_events_operation()},
        "/api/jobs/{jobId}/output": {"get": job_output_operation()},
        "/api/events": {"get": user_events_operation()},
        "/api/job-types": {"get": job_types_operation()},
        "/api/usage": {"get": usage_operation()},
    }
    for path, job_type in ideation_routes.items():
        body = {
            "required": True,
            "content": {JSON: {"schema": ref(JOB_TYPES[job_type].input_type.__name__)}},
        }
        summary = f"Create a `{job_type}` job; the body is its input"
        # `createScriptGenerationJob`: camelCase, as every other operation.
        operation_id = "create" + type_schema_name(job_type, "Job")
        paths[path] = {"post": create_operation(summary, operation_id, body)}
    return {
        "openapi": OPENAPI_VERSION,
        # Relative: the document describes the gateway that serves it, wherever that is.
        "servers": [{"url": "/"}],
        "info": {
            "title": "AI jobs gateway",
            "version": "1",
            "description": (
                "Admits AI jobs and answers their status. Errors are RFC 9457 "
                f"`{PROBLEM_MEDIA_TYPE}`; checks run in the order "
                "401, 429, 415, 413, 400, 422, 409, 402."
            ),
        },
        "paths": paths,
        "x-job-types": job_type_index(),
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                ACCESS_TOKEN_SCHEME: {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access_token",
                    "description": "The same JWT, or a job token, on the event and output "
                    "routes; a job token only, on `GET /api/jobs/{jobId}`.",
                },
            },
        },
    }
