"""The gateway's HTTP API as a Starlette app: checks each request in the contract's order
(token, request rate, content type, size, JSON, validation, idempotency), calls the handlers
and answers JSON or `application/problem+json`, logging one line per request (never its
token); streams job events as Server-Sent Events, each counted against the per-user and
per-process stream caps while it is open. Also serves the public OpenAPI document
(`/openapi.json`), its page (`/docs`), the dev demo page (`/`), and CORS for configured
origins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import handlers, realtime
from gateway.adapters import metrics
from gateway.adapters.openapi import openapi_document
from gateway.adapters.pages import DOCS_ASSETS, docs_assets, docs_page, page_response
from gateway.auth import AuthError, KeysUnavailable, TokenVerifier
from gateway.cache import CachedJob, FinishedJobs
from gateway.jobviews import JobViews
from gateway.limits import LimitExceeded, OpenJobs, RequestRate
from gateway.ports import (
    BadCursor,
    Clock,
    EventBus,
    IdempotencyKeys,
    JobStore,
    RequestedLog,
    Unavailable,
)
from gateway.problems import (
    IDEMPOTENCY_CONFLICT,
    IDEMPOTENCY_IN_PROGRESS,
    INVALID_CURSOR,
    JOB_FINISHED,
    OUTPUT_TOO_LARGE,
    STREAMS_FULL,
    TOO_MANY_REQUESTS,
)
from gateway.realtime import Hub
from gateway.streams import OpenStreams, StreamsFull
from jobs_proto import wire
from jobs_proto.api import JobView, ProblemDetail
from jobs_proto.status import is_terminal
from jobs_runtime.web import (
    INTERNAL,
    MALFORMED_JSON,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION,
    EscapedQueryString,
    ProblemKind,
    kind_for_status,
    problem,
    problem_response,
    read_limited,
)

log = logging.getLogger("gateway.http")

# How long a client should wait before retrying after a `503`: NATS reconnects within about
# a second, a restarted job-store within a few.
RETRY_AFTER_S: Final = 2
JSON_MEDIA_TYPE: Final = "application/json"
# The routes the existing frontend calls: the whole body is the input of one job type.
IDEATION_ROUTES: Final[Mapping[str, str]] = {
    "/api/ideation/generate-script": "script_generation",
    "/api/ideation/video-outline": "video_outline",
    "/api/ideation/generate-titles": "title_generation",
}
OPENAPI_PATH: Final = "/openapi.json"
# The query parameter that may carry the token on the event routes.
ACCESS_TOKEN: Final = "access_token"
EVENT_STREAM: Final = "text/event-stream"
# CORS: what a browser page on an allowed origin may send and read. `Authorization` is a
# header, not a cookie, so credentials mode stays off.
CORS_ALLOW_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-None-Match",
    "Last-Event-ID",
)
CORS_EXPOSE_HEADERS: Final = ("Location", "ETag", "Retry-After", "Idempotent-Replayed")
CORS_MAX_AGE_S: Final = 600
# The demo page, its script and style, and the client it is built on live in the repository
# (`make run`, tests), not in the installed package.
DEMO_DIR: Final = Path("services", "gateway", "demo")
DEMO_PAGE_FILE: Final = DEMO_DIR / "index.html"
CLIENT_FILE: Final = Path("clients", "js", "jobs-client.js")
DEMO_CLIENT_PATH: Final = "/demo/jobs-client.js"
# Served at `/demo/<name>`, with their media types.
DEMO_ASSETS: Final = {"demo.js": "text/javascript", "demo.css": "text/css"}
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


DEFAULT_IDEMPOTENCY: Final = handlers.IdempotencyPolicy()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class GatewayPorts:
    """What the HTTP API is built over: token verification, the ports, the body limit."""

    verifier: TokenVerifier
    bus: EventBus
    store: JobStore
    requested: RequestedLog
    max_body_bytes: int
    clock: Clock = _utc_now
    # Origins a browser may call the API from (`CORS_ORIGINS`); empty: no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # Where `Idempotency-Key`s are kept; `None`: the header is validated, then ignored.
    keys: IdempotencyKeys | None = None
    idempotency: handlers.IdempotencyPolicy = DEFAULT_IDEMPOTENCY
    # `USER_REQUESTS_PER_S` and `USER_MAX_OPEN_JOBS`; `None`: off.
    rate: RequestRate | None = None
    open_jobs: OpenJobs | None = None
    # Answers of finished jobs; `None`: every read asks the job-store.
    finished: FinishedJobs | None = None
    # Running jobs known from announcements and replies; `None`: every read asks the job-store.
    views: JobViews | None = None
    # Fans job changes and progress out to the event streams; `None`: a hub nobody feeds
    # (streams then send the current state and keepalives only).
    hub: Hub | None = None
    # The open streams, counted against `USER_MAX_STREAMS` and `MAX_STREAMS` (default: counted,
    # no limit).
    streams: OpenStreams = field(default_factory=OpenStreams)
    # Serve the demo page at `/` (and the JavaScript client it is built on).
    demo_page: bool = False


class Refusal(Exception):
    """An answer that is a problem: raised by a check, turned into `problem+json` once."""

    def __init__(
        self,
        kind: ProblemKind,
        detail: str,
        *,
        errors: list[ProblemDetail] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = problem(kind, detail, errors)
        self.headers = dict(headers or {})


def json_response(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(msgspec.json.encode(body), status, headers=headers, media_type=JSON_MEDIA_TYPE)


# --- the checks, in the contract's order -------------------------------------------------


async def authenticate(
    verifier: TokenVerifier, request: Request, *, query_token: bool = False
) -> str:
    """The caller's user id, or `401` with `WWW-Authenticate: Bearer`; `503` with
    `Retry-After` when the token's JWKS key is unknown and the JWKS cannot be fetched (see
    `KeysUnavailable`: the token may well be good, so the client keeps it and retries).

    With `query_token` (the event routes only: `EventSource` cannot send headers) a request
    without `Authorization` may carry the token as `?access_token=`.
    """
    authorization = request.headers.get("authorization")
    if authorization is None and query_token and (given := request.query_params.get(ACCESS_TOKEN)):
        authorization = f"Bearer {given}"
    try:
        user_id = await verifier.authenticate(authorization)
    except KeysUnavailable as exc:
        log.warning("token keys unavailable", extra={"reason": str(exc)})
        raise Refusal(
            UNAVAILABLE,
            "the token's signing keys cannot be fetched; retry later",
            headers={"Retry-After": str(exc.retry_after_s)},
        ) from None
    except AuthError as exc:
        # RFC 6750: name the error only when a token was presented.
        challenge = 'Bearer error="invalid_token"' if authorization else "Bearer"
        raise Refusal(UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": challenge}) from None
    request.state.user_id = user_id
    return user_id


async def authorize(ports: GatewayPorts, request: Request, *, query_token: bool = False) -> str:
    """The caller's user id once its token is good (`401`) and its request rate allows one
    more (`429`, counted per replica), the first two checks of every API route."""
    user_id = await authenticate(ports.verifier, request, query_token=query_token)
    if ports.rate is not None:
        ports.rate.take(user_id)
    return user_id


def check_content_type(content_type: str | None) -> None:
    """`application/json`, with parameters allowed; a charset other than UTF-8 is refused,
    since JSON on the wire is UTF-8 (RFC 8259) and would be misread otherwise."""
    media_type, *parameters = (content_type or "").split(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        raise Refusal(UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise Refusal(UNSUPPORTED_MEDIA_TYPE, "a JSON body must be UTF-8")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with `413` as soon as it is known to exceed `limit` bytes: from
    `Content-Length` before reading, or while reading a body sent without one."""
    body = await read_limited(request, limit)
    if body is None:
        raise Refusal(PAYLOAD_TOO_LARGE, f"the body must not exceed {limit} bytes")
    return body


def decode_json(body: bytes) -> object:
    try:
        return wire.decode_json(body)
    except msgspec.DecodeError as exc:
        raise Refusal(MALFORMED_JSON, f"the body is not valid JSON: {exc}") from None


async def json_body(ports: GatewayPorts, request: Request) -> object:
    """Content type, size and JSON checks of a request with a body, in that order."""
    check_content_type(request.headers.get("content-type"))
    return decode_json(await read_body(request, ports.max_body_bytes))


# --- conditional GET ---------------------------------------------------------------------


def etag(view: JobView) -> str:
    """Weak: the same version may be encoded differently (field order, time precision)."""
    return f'W/"{view.job_id}.{view.version}"'


def etag_matches(if_none_match: str | None, tag: str) -> bool:
    """`If-None-Match` by weak comparison (RFC 9110 §13.1.2), `*` matching any job."""
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = tag.removeprefix("W/")
    return any(c.strip().removeprefix("W/") == opaque for c in if_none_match.split(","))


def parse_job_id(raw: str) -> uuid.UUID | None:
    """The job id of a path, only in the canonical 8-4-4-4-12 form `Location` hands out.

    Every `{job_id}` route goes through here. `fullmatch`, not `match` with `$`: `$` also
    matches before a trailing newline, and `/api/jobs/<id>%0A` reached `uuid.UUID` (a `500`).
    """
    return uuid.UUID(raw) if _UUID.fullmatch(raw) else None


# --- endpoints ----------------------------------------------------------------------------

Endpoint = Callable[[Request], Awaitable[Response]]


async def _admit(
    ports: GatewayPorts,
    request: Request,
    user_id: str,
    body: object,
    job: handlers.NewJob,
) -> Response:
    """Admit a validated job, once per `Idempotency-Key` when the request has one."""
    key = handlers.check_idempotency_key(request.headers.get(handlers.IDEMPOTENCY_HEADER))
    if key is None or ports.keys is None:
        admitted = handlers.Admitted(
            await handlers.admit_job(
                user_id, job, ports.bus, clock=ports.clock, admission=ports.open_jobs
            )
        )
    else:
        admitted = await handlers.admit_job_once(
            user_id,
            handlers.idempotency_slot(user_id, key),
            handlers.request_fingerprint(request.url.path, body),
            job,
            ports.bus,
            ports.keys,
            ports.requested,
            clock=ports.clock,
            admission=ports.open_jobs,
            policy=ports.idempotency,
        )
    accepted = admitted.accepted
    if admitted.replayed:
        metrics.IDEMPOTENT_REPLAYS.inc()
    else:
        metrics.admitted(job.job_type).inc()
    if log.isEnabledFor(logging.INFO):
        log.info(
            "job replayed" if admitted.replayed else "job admitted",
            extra={"job_id": str(accepted.job_id), "job_type": job.job_type, "user_id": user_id},
        )
    headers = {"Location": f"/api/jobs/{accepted.job_id}"}
    if admitted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(accepted, 202, headers=headers)


def _create_job(ports: GatewayPorts) -> Endpoint:
    async def create_job(request: Request) -> Response:
        user_id = await authorize(ports, request)
        body = await json_body(ports, request)
        return await _admit(ports, request, user_id, body, handlers.parse_create_job(body))

    return create_job


def _create_typed_job(ports: GatewayPorts, job_type: str) -> Endpoint:
    async def create_typed_job(request: Request) -> Response:
        user_id = await authorize(ports, request)
        body = await json_body(ports, request)
        job = handlers.parse_job_input(job_type, body)
        return await _admit(ports, request, user_id, body, job)

    return create_typed_job


def _job_answer(request: Request, tag: str, body: bytes) -> Response:
    # Per user, and must be revalidated: a job changes until it is terminal.
    headers = {"ETag": tag, "Cache-Control": "private, no-cache"}
    if etag_matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=JSON_MEDIA_TYPE)


def _get_job(ports: GatewayPorts) -> Endpoint:
    async def get_job(request: Request) -> Response:
        user_id = await authorize(ports, request)
        job_id = parse_job_id(request.path_params["job_id"])
        if job_id is None:
            raise Refusal(NOT_FOUND, "no such job")
        if ports.finished is not None and (cached := ports.finished.get(job_id)) is not None:
            # The owner of a job never changes: another user's request needs no job-store.
            if cached.user_id != user_id:
                raise Refusal(NOT_FOUND, "no such job")
            metrics.CACHE_HITS.inc()
            return _job_answer(request, cached.etag, cached.body)
        if ports.views is not None and (known := ports.views.answer(job_id)) is not None:
            if known.user_id != user_id:
                raise Refusal(NOT_FOUND, "no such job")
            metrics.VIEW_READS.inc()
            return _job_answer(request, known.etag, known.body)
        metrics.STORE_READS.inc()
        view = await handlers.read_job(user_id, job_id, ports.store, ports.requested, whole=True)
        if view is None:
            raise Refusal(NOT_FOUND, "no such job")
        tag, body = etag(view), msgspec.json.encode(view)
        if ports.finished is not None and is_terminal(view.status):
            ports.finished.put(job_id, CachedJob(user_id, tag, body))
        return _job_answer(request, tag, body)

    return get_job


def _list_jobs(ports: GatewayPorts) -> Endpoint:
    async def list_jobs(request: Request) -> Response:
        user_id = await authorize(ports, request)
        query = handlers.parse_list_query(user_id, request.query_params.multi_items())
        page = await handlers.list_jobs(query, ports.store)
        # Per user, and changes with every job of theirs.
        return json_response(page, headers={"Cache-Control": "private, no-store"})

    return list_jobs


def _cancel_job(ports: GatewayPorts) -> Endpoint:
    async def cancel_job(request: Request) -> Response:
        # No body is read: whatever a client sends with the request is ignored.
        user_id = await authorize(ports, request)
        job_id = parse_job_id(request.path_params["job_id"])
        view = None
        if job_id is not None:
            view = await handlers.cancel_job(
                user_id, job_id, ports.store, ports.requested, ports.bus, clock=ports.clock
            )
        if view is None:
            raise Refusal(NOT_FOUND, "no such job")
        log.info(
            "job cancel requested",
            extra={"job_id": str(job_id), "status": view.status, "user_id": user_id},
        )
        return json_response(view, 202, headers={"Location": f"/api/jobs/{view.job_id}"})

    return cancel_job


# --- event streams -------------------------------------------------------------------------

_STREAM_HEADERS: Final = {
    "Cache-Control": "no-cache",
    # nginx and the like buffer answers by default; a stream must go out as written.
    "X-Accel-Buffering": "no",
}


# Every stream's answer head, built once: a stream holds no header objects of its own.
_STREAM_RAW_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    *((name.lower().encode(), value.encode()) for name, value in _STREAM_HEADERS.items()),
]


class EventStream:
    """A `text/event-stream` answer that releases its hub subscription (`cleanup`) however
    it ends: the terminal state, the client gone (even before the first byte), shutdown.

    A plain ASGI answer, not a Starlette `StreamingResponse`: with 10,000 streams open what
    each holds counts. One task per stream, not Starlette's two (uvicorn speaks ASGI 2.3, for
    which `StreamingResponse` adds a task that only waits for the disconnect), and no headers
    or background objects of its own. A departed client is noticed instead when a keepalive
    is due, which the streams send after `SSE_KEEPALIVE_S` of quiet.
    """

    __slots__ = ("_chunks", "_cleanup")
    status_code: Final = 200

    def __init__(self, chunks: AsyncIterator[bytes], cleanup: ExitStack) -> None:
        self._chunks = chunks
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.STREAMS_OPENED.inc()
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": _STREAM_RAW_HEADERS}
            )
            async for chunk in self._chunks:
                if chunk is realtime.KEEPALIVE and await _client_gone(receive):
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            return  # the connection broke while writing: nothing more to say to anyone
        finally:
            close = getattr(self._chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            self._cleanup.close()


async def _client_gone(receive: Receive) -> bool:
    """Whether the client hung up, without waiting when it did not: uvicorn answers a
    disconnect at once and otherwise waits for one, so a moment's wait tells them apart."""
    try:
        async with asyncio.timeout(0.01):
            message = await receive()
    except TimeoutError:
        return False
    return bool(message["type"] == "http.disconnect")


def _streaming(chunks: AsyncIterator[bytes], cleanup: ExitStack) -> Response:
    # Starlette only calls what an endpoint returns (and the log reads `status_code`).
    return EventStream(chunks, cleanup)  # type: ignore[return-value]


def hold_stream(ports: GatewayPorts, user_id: str, cleanup: ExitStack) -> None:
    """Count one more open stream of `user_id` until `cleanup` closes, or refuse it (`429` at
    `USER_MAX_STREAMS`, `503` at `MAX_STREAMS`).

    Every stream route (the event routes, and the output route when it comes) calls this first
    thing inside its `ExitStack`, before any read: a refusal costs no job-store request, and an
    answer that is not a stream (`204`, `404`, an error) gives the slot back as the stack
    unwinds. A stream hands the stack to `EventStream`, which closes it however it ends.
    """
    cleanup.callback(ports.streams.take(user_id).close)


def _job_events(ports: GatewayPorts, hub: Hub) -> Endpoint:
    async def job_events(request: Request) -> Response:
        user_id = await authorize(ports, request, query_token=True)
        job_id = parse_job_id(request.path_params["job_id"])
        if job_id is None:
            raise Refusal(NOT_FOUND, "no such job")

        async def reload(job_id: uuid.UUID) -> JobView | None:
            return await handlers.read_job(user_id, job_id, ports.store, ports.requested)

        with ExitStack() as cleanup:
            hold_stream(ports, user_id, cleanup)
            # Subscribed before the state is read: no change can fall in between.
            subscription = cleanup.enter_context(hub.watch_job(job_id))
            view = await reload(job_id)
            if view is None:
                raise Refusal(NOT_FOUND, "no such job")
            known = realtime.known_version(request.headers.get("last-event-id"), view)
            if realtime.already_final(view, known):
                return Response(status_code=204, headers={"Cache-Control": "no-store"})
            chunks = realtime.job_events(view, known, subscription, reload, hub.policy)
            return _streaming(chunks, cleanup.pop_all())

    return job_events


def _user_events(ports: GatewayPorts, hub: Hub) -> Endpoint:
    async def user_events(request: Request) -> Response:
        user_id = await authorize(ports, request, query_token=True)

        async def reload(job_id: uuid.UUID) -> JobView | None:
            return await handlers.read_job(user_id, job_id, ports.store, ports.requested)

        with ExitStack() as cleanup:
            hold_stream(ports, user_id, cleanup)
            subscription = cleanup.enter_context(hub.watch_user(user_id))
            since = realtime.parse_position(request.headers.get("last-event-id"))
            views = await handlers.jobs_to_replay(user_id, ports.store, since)
            for view in views:
                hub.note_owner(view.job_id, user_id)
            chunks = realtime.user_events(views, subscription, reload, hub.policy)
            return _streaming(chunks, cleanup.pop_all())

    return user_events


# --- the demo page ---------------------------------------------------------------------------


def _demo(ports: GatewayPorts) -> list[Route]:
    """`/` and the client it loads, public, when the demo page is on and its files exist
    (they live in the repository, not in the package: the demo is for development)."""
    if not ports.demo_page:
        return []
    repository = next(
        (p for p in Path(__file__).resolve().parents if (p / DEMO_PAGE_FILE).is_file()), None
    )
    if repository is None or not (repository / CLIENT_FILE).is_file():
        log.warning("demo page off: its files are not beside this installation")
        return []
    page, client = repository / DEMO_PAGE_FILE, repository / CLIENT_FILE

    # Read on each request: the demo is for development, where the files change.
    async def demo_page(request: Request) -> Response:
        return page_response(page.read_bytes())

    async def demo_client(request: Request) -> Response:
        return Response(client.read_bytes(), media_type="text/javascript")

    def demo_asset(name: str, media_type: str) -> Endpoint:
        async def asset(request: Request) -> Response:
            return Response((repository / DEMO_DIR / name).read_bytes(), media_type=media_type)

        return asset

    return [
        Route("/", _answered(demo_page), methods=["GET"]),
        Route(DEMO_CLIENT_PATH, _answered(demo_client), methods=["GET"]),
        *(
            Route(f"/demo/{name}", _answered(demo_asset(name, media_type)), methods=["GET"])
            for name, media_type in DEMO_ASSETS.items()
        ),
    ]


# --- one answer and one log line per request ------------------------------------------------


def _refusal_of(exc: Exception) -> Refusal | None:
    match exc:
        case Refusal():
            return exc
        case handlers.InvalidRequest():
            return Refusal(VALIDATION, exc.detail, errors=exc.errors)
        case handlers.OutputTooLarge():
            return Refusal(OUTPUT_TOO_LARGE, str(exc))
        case handlers.JobFinished():
            return Refusal(JOB_FINISHED, str(exc))
        case handlers.KeyReused():
            metrics.IDEMPOTENCY_CONFLICTS.labels("reused").inc()
            return Refusal(IDEMPOTENCY_CONFLICT, str(exc))
        case handlers.KeyInProgress():
            metrics.IDEMPOTENCY_CONFLICTS.labels("in_progress").inc()
            return Refusal(
                IDEMPOTENCY_IN_PROGRESS, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}
            )
        case LimitExceeded():
            metrics.LIMITED.labels(exc.limit).inc()
            return Refusal(
                TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after_s)}
            )
        case StreamsFull():
            metrics.STREAMS_FULL.inc()
            return Refusal(STREAMS_FULL, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
        case BadCursor():
            return Refusal(
                INVALID_CURSOR,
                f"the cursor is not valid for these filters: {exc}; start again without it",
            )
        case Unavailable():
            return Refusal(
                UNAVAILABLE,
                "the job system is unavailable; retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
    return None


def _log_request(request: Request, status: int, started: float, **fields: Any) -> None:
    # A 503 is the bus being away (expected during restarts); other 5xx are bugs.
    level = logging.INFO
    if status == 503:
        level = logging.WARNING
    elif status >= 500:
        level = logging.ERROR
    # Nothing is built for a line that is not written: this runs on every request.
    if not log.isEnabledFor(level):
        return
    extra = {
        "method": request.method,
        # The path only: a query string may carry an `access_token`.
        "path": request.scope["path"],
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        "user_id": getattr(request.state, "user_id", None),
        **fields,
    }
    log.log(level, "request", extra=extra)


def _answered(endpoint: Endpoint) -> Endpoint:
    async def answer(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await endpoint(request)
        except ClientDisconnect:
            # Gone while sending its body: nothing was admitted and nobody reads an answer.
            _log_request(request, 499, started, detail="client disconnected")
            return Response(status_code=400)
        except Exception as exc:
            refusal = _refusal_of(exc)
            if refusal is None:
                log.exception("unexpected error", extra={"path": request.scope["path"]})
                refusal = Refusal(INTERNAL, "unexpected error")
            fields: dict[str, Any] = {
                "problem": refusal.problem.type,
                "detail": refusal.problem.detail,
            }
            if refusal.problem.errors:
                fields["errors"] = [
                    f"{handlers.where(e)}: {e.detail}" for e in refusal.problem.errors
                ]
            if isinstance(exc, Unavailable):
                fields["reason"] = str(exc)
            _log_request(request, refusal.problem.status, started, **fields)
            return problem_response(refusal.problem, refusal.headers)
        _log_request(request, response.status_code, started)
        return response

    return answer


async def _framework_refusal(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods, answered as problems like everything else."""
    assert isinstance(exc, HTTPException)
    kind = kind_for_status(exc.status_code)
    body = problem(kind, exc.detail or kind.title)
    _log_request(request, exc.status_code, time.perf_counter(), problem=kind.type)
    return problem_response(body, exc.headers)


def _documentation() -> list[Route]:
    """`/openapi.json`, `/docs` and the Swagger UI files it loads: public, so that a client can
    be written before it has a token. The document is built and encoded once, the files read
    once; they only change with the code."""
    document = msgspec.json.encode(openapi_document(IDEATION_ROUTES))
    page = docs_page(OPENAPI_PATH)
    assets = docs_assets()

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type=JSON_MEDIA_TYPE)

    async def docs(request: Request) -> Response:
        return page_response(page)

    def docs_asset(name: str) -> Endpoint:
        async def asset(request: Request) -> Response:
            return assets[name].response()

        return asset

    return [
        Route(OPENAPI_PATH, _answered(openapi_json), methods=["GET"]),
        Route("/docs", _answered(docs), methods=["GET"]),
        *(
            Route(f"{DOCS_ASSETS}/{name}", _answered(docs_asset(name)), methods=["GET"])
            for name in assets
        ),
    ]


def _middleware(ports: GatewayPorts) -> list[Middleware]:
    escaped = Middleware(EscapedQueryString)
    if not ports.cors_origins:
        return [escaped]
    # Outside the routes: a preflight carries no token and must be answered before auth.
    return [
        escaped,
        Middleware(
            CORSMiddleware,
            allow_origins=list(ports.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=list(CORS_ALLOW_HEADERS),
            expose_headers=list(CORS_EXPOSE_HEADERS),
            max_age=CORS_MAX_AGE_S,
        ),
    ]


def build_app(ports: GatewayPorts) -> Starlette:
    hub = ports.hub if ports.hub is not None else Hub()
    routes = [
        Route("/api/jobs", _answered(_create_job(ports)), methods=["POST"]),
        Route("/api/jobs", _answered(_list_jobs(ports)), methods=["GET"]),
        Route("/api/jobs/{job_id}", _answered(_get_job(ports)), methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", _answered(_cancel_job(ports)), methods=["POST"]),
        Route("/api/jobs/{job_id}/events", _answered(_job_events(ports, hub)), methods=["GET"]),
        Route("/api/events", _answered(_user_events(ports, hub)), methods=["GET"]),
        *(
            Route(path, _answered(_create_typed_job(ports, job_type)), methods=["POST"])
            for path, job_type in IDEATION_ROUTES.items()
        ),
        *_documentation(),
        *_demo(ports),
    ]
    return Starlette(
        routes=routes,
        middleware=_middleware(ports),
        exception_handlers={HTTPException: _framework_refusal},
    )
