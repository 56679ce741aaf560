"""The job routes: create (`POST /api/jobs` and the ideation routes), read (with `ETag` and
`304`), list, history and cancel. Each endpoint only turns the request into a handler's
message and the outcome into an answer; a read of a finished or running job is answered from
memory (the finished-jobs cache, the job views) when this gateway knows it, before any
handler runs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from gateway import handlers
from gateway.cache import CachedJob
from gateway.tokens import Caller
from jobs_proto.api import JobToken
from jobs_proto.problems import UNAVAILABLE
from jobs_proto.status import is_terminal
from jobs_runtime import tracing

from .checks import (
    JSON_MEDIA_TYPE,
    Refusal,
    authorize,
    authorize_caller,
    authorize_job_reader,
    etag,
    etag_matches,
    json_body,
    json_response,
    parse_job_id,
)
from .ports import GatewayPorts
from .problems import not_found, refuse

log = logging.getLogger("gateway.http")

Endpoint = Callable[[Request], Awaitable[Response]]


async def _submit(
    ports: GatewayPorts, request: Request, caller: Caller, job: handlers.NewJob, body: object
) -> Response:
    """Admit a validated job, once per `Idempotency-Key` when the request has one."""
    user_id = caller.user_id
    key = handlers.check_idempotency_key(request.headers.get(handlers.IDEMPOTENCY_HEADER))
    fingerprint = "" if key is None else handlers.request_fingerprint(request.url.path, body)
    message = handlers.SubmitJob(user_id, job, key, fingerprint, caller.budget_micros)
    outcome = await handlers.submit_job(message, ports.deps)
    if isinstance(outcome, handlers.Refused):
        raise refuse(outcome)
    accepted = outcome.accepted
    if tracing.ENABLED:
        tracing.annotate("job.id", str(accepted.job_id))
    if outcome.replayed:
        ports.observer.idempotent_replay()
    else:
        ports.observer.job_admitted(job.job_type)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "job replayed" if outcome.replayed else "job admitted",
            extra={"job_id": str(accepted.job_id), "job_type": job.job_type, "user_id": user_id},
        )
    headers = {"Location": f"/api/jobs/{accepted.job_id}"}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(accepted, 202, headers=headers)


def create_job(ports: GatewayPorts) -> Endpoint:
    async def create_job(request: Request) -> Response:
        caller = await authorize_caller(ports.verifier, ports.rate, request)
        body = await json_body(request, ports.max_body_bytes)
        return await _submit(ports, request, caller, handlers.parse_create_job(body), body)

    return create_job


def create_typed_job(ports: GatewayPorts, job_type: str) -> Endpoint:
    async def create_typed_job(request: Request) -> Response:
        caller = await authorize_caller(ports.verifier, ports.rate, request)
        body = await json_body(request, ports.max_body_bytes)
        job = handlers.parse_job_input(job_type, body)
        return await _submit(ports, request, caller, job, body)

    return create_typed_job


def _job_answer(request: Request, tag: str, body: bytes) -> Response:
    # Per user, and must be revalidated: a job changes until it is terminal.
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if etag_matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=JSON_MEDIA_TYPE)


def get_job(ports: GatewayPorts) -> Endpoint:
    async def get_job(request: Request) -> Response:
        user_id, job_id = await authorize_job_reader(ports.verifier, ports.rate, request)
        if job_id is None:
            raise not_found()
        # The owner of a job never changes: another user's request needs no job-store.
        if ports.finished is not None and (cached := ports.finished.get(job_id)) is not None:
            if cached.user_id != user_id:
                raise not_found()
            ports.observer.job_read("cache")
            return _job_answer(request, cached.etag, cached.body)
        if ports.views is not None and (known := ports.views.answer(job_id)) is not None:
            if known.user_id != user_id:
                raise not_found()
            ports.observer.job_read("job_view")
            return _job_answer(request, known.etag, known.body)
        ports.observer.job_read("job_store")
        outcome = await handlers.read(handlers.ReadJob(user_id, job_id, whole=True), ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise refuse(outcome)
        if isinstance(outcome, handlers.NotFound):
            raise not_found()
        view = outcome.view
        cached = CachedJob(user_id, etag(view), msgspec.json.encode(view))
        if ports.finished is not None and is_terminal(view.status):
            ports.finished.put(job_id, cached)
        return _job_answer(request, cached.etag, cached.body)

    return get_job


def list_jobs(ports: GatewayPorts) -> Endpoint:
    async def list_jobs(request: Request) -> Response:
        user_id = await authorize(ports.verifier, ports.rate, request)
        query = handlers.parse_list_query(user_id, request.query_params.multi_items())
        outcome = await handlers.list_page(query, ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise refuse(outcome)
        # Per user, and changes with every job of theirs.
        return json_response(outcome, headers={"Cache-Control": "private, no-store"})

    return list_jobs


def job_history(ports: GatewayPorts) -> Endpoint:
    async def job_history(request: Request) -> Response:
        user_id = await authorize(ports.verifier, ports.rate, request)
        job_id = parse_job_id(request.path_params["job_id"])
        if job_id is None:
            raise not_found()
        query = handlers.parse_history_query(user_id, job_id, request.query_params.multi_items())
        outcome = await handlers.history(query, ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise refuse(outcome)
        if isinstance(outcome, handlers.NotFound):
            raise not_found()
        # Per user, and grows while the job runs.
        return json_response(outcome, headers={"Cache-Control": "private, no-store"})

    return job_history


def cancel_job(ports: GatewayPorts) -> Endpoint:
    async def cancel_job(request: Request) -> Response:
        # No body is read: whatever a client sends with the request is ignored.
        user_id = await authorize(ports.verifier, ports.rate, request)
        job_id = parse_job_id(request.path_params["job_id"])
        if job_id is None:
            raise not_found()
        outcome = await handlers.cancel(handlers.CancelJob(user_id, job_id), ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise refuse(outcome)
        if isinstance(outcome, handlers.NotFound):
            raise not_found()
        view = outcome.view
        log.info(
            "job cancel requested",
            extra={"job_id": str(job_id), "status": view.status, "user_id": user_id},
        )
        return json_response(view, 202, headers={"Location": f"/api/jobs/{view.job_id}"})

    return cancel_job


def create_job_token(ports: GatewayPorts) -> Endpoint:
    async def create_job_token(request: Request) -> Response:
        # No body is read, as for cancel.
        user_id = await authorize(ports.verifier, ports.rate, request)
        job_tokens = ports.verifier.job_tokens
        job_id = parse_job_id(request.path_params["job_id"])
        if job_id is None:
            raise not_found()
        outcome = await handlers.read(handlers.ReadJob(user_id, job_id), ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise refuse(outcome)
        if isinstance(outcome, handlers.NotFound):
            raise not_found()
        if job_tokens is None:
            raise Refusal(UNAVAILABLE, "job tokens are not configured (JOB_TOKEN_SECRET)")
        issued = job_tokens.issue(user_id, job_id)
        answer = JobToken(
            token=issued.token, expires_at=datetime.fromtimestamp(issued.expires_at, UTC)
        )
        # A credential: never kept by a cache on the way.
        return json_response(answer, headers={"Cache-Control": "no-store"})

    return create_job_token
