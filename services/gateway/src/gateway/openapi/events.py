"""The OpenAPI operations of the event-stream routes (Server-Sent Events): one job's, all of
the caller's jobs', and one job's output text."""

from __future__ import annotations

from typing import Any, Final

from jobs_proto.api import JobProgress, JobView, OutputDone, OutputText

from .parts import (
    ACCESS_TOKEN_SCHEME,
    EVENT_STREAM,
    JOB_TOKEN_NOTE,
    JSON,
    SECURITY_SCHEME,
    STREAMED,
    header,
    job_id_parameter,
    job_reader,
    problems,
    ref,
)

_STREAM_FORMAT: Final = (
    "`event: status` carries the job as `GET /api/jobs/{jobId}` answers it "
    "(`JobView`; `output` may be null in a terminal state whose output is too large to "
    "send), `event: progress` carries `JobProgress` (`output`: all the text so far; `seq` "
    "grows). A comment line (`: keepalive`) follows every quiet `SSE_KEEPALIVE_S` (15 s). "
    "When the gateway shuts down the stream ends with `retry: <ms>` so the client reconnects "
    "(to another replica), with `Last-Event-ID`. Only `status` events carry an `id:`; "
    "`progress` events carry none, so `Last-Event-ID` stays the last status event's and a "
    "reconnect resumes from that state (the next progress event holds all the text so far)."
)


def _event(name: str, data: str, with_id: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": JSON, "contentSchema": ref(data)},
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
        "headers": {"Cache-Control": header("`no-cache`.")},
        "content": {
            EVENT_STREAM: {
                "schema": {
                    "oneOf": [
                        _event("status", JobView.__name__, with_id=True),
                        # No `id:`: an `EventSource` keeps the last status event's.
                        _event("progress", JobProgress.__name__, with_id=False),
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


def job_events_operation() -> dict[str, Any]:
    return {
        "summary": "A job's status changes and partial output, pushed",
        "operationId": "streamJobEvents",
        "security": [{SECURITY_SCHEME: []}, {ACCESS_TOKEN_SCHEME: []}],
        "parameters": [job_id_parameter(), *_stream_parameters()],
        "responses": {
            "200": _event_stream(
                "The job's events: `id:` is the job's `version`; the current state comes first "
                "(unless `Last-Event-ID` is that version already), then one `status` per change; "
                "the stream closes after the terminal state." + JOB_TOKEN_NOTE
            ),
            "204": {
                "description": "The job is terminal and `Last-Event-ID` is its final version: "
                "nothing will follow (stops `EventSource` reconnecting)."
            },
            **problems(
                job_reader({"404": "Unknown job, another user's job, or not a UUID.", **STREAMED})
            ),
        },
    }


def user_events_operation() -> dict[str, Any]:
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
            **problems(STREAMED),
        },
    }


def job_output_operation() -> dict[str, Any]:
    offset = {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "Characters (Unicode code points) of output the client already has: "
        "the stream starts after them. `Last-Event-ID`, when sent, takes precedence.",
        "schema": {"type": "integer", "minimum": 0},
    }
    last_event_id, access_token = _stream_parameters()
    last_event_id = {
        **last_event_id,
        "description": "The last `id:` the client received (characters delivered): the "
        "stream resumes after them, nothing repeated and nothing skipped.",
    }
    return {
        "summary": "A job's output text as the model writes it, pushed",
        "operationId": "streamJobOutput",
        "security": [{SECURITY_SCHEME: []}, {ACCESS_TOKEN_SCHEME: []}],
        "parameters": [job_id_parameter(), offset, last_event_id, access_token],
        "responses": {
            "200": {
                "description": "`event: output` carries `OutputText` (the text after what "
                "the client has); its `id:` counts the characters delivered up to and "
                "including it. After the last text `event: done` carries `OutputDone` (the "
                "job's terminal status and error), then the stream closes. The texts from "
                "offset 0 joined equal the job's `output`. An offset past the end of a "
                "finished job's output: `done` at once; past the current end of a running "
                "job's: the stream waits for the text to get there. A comment line "
                "(`: keepalive`) follows every quiet `SSE_KEEPALIVE_S` (15 s); `retry: <ms>` "
                "ends a stream the client should resume with `Last-Event-ID`." + JOB_TOKEN_NOTE,
                "headers": {"Cache-Control": header("`no-cache`.")},
                "content": {
                    EVENT_STREAM: {
                        "schema": {
                            "oneOf": [
                                _event("output", OutputText.__name__, with_id=True),
                                _event("done", OutputDone.__name__, with_id=False),
                            ]
                        }
                    }
                },
            },
            **problems(
                job_reader(
                    {
                        "404": "Unknown job, another user's job, or not a UUID.",
                        "413": "The job's stored output is too large for the job system to send.",
                        "422": "`offset` or `Last-Event-ID` is not a non-negative integer "
                        "(`errors[].parameter` names it).",
                        **STREAMED,
                    }
                )
            ),
        },
    }
