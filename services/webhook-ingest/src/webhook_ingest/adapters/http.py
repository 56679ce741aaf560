"""The public endpoint Replicate calls, `POST /api/webhooks/replicate?job=<jobId>`: the app and
its route, reading the body in `adapters/body.py` and answering in `adapters/answers.py`.

First a rate limit per source address (`429` with `Retry-After`). Then the contract's order:
size `413`, signature headers and timestamp `401` (both before any byte of the body is kept or
held), signature `401`, body and job id `400` (a `?job=` that is not the job the signed body
names is refused). Only a request that has passed the headers and the timestamp may read its
body, under a cap on large bodies in memory, in all and per source (`503` with `Retry-After`),
and a deadline for the whole body (`408`, connection closed). Each refusal is an RFC 9457
problem, one log line and a count (`WebhookObserver`; `adapters/answers.py`). `200` only
once JetStream has stored the event (and a large output its object), or parked a webhook naming
no job of ours (logged, counted as `parked`); `503` with `Retry-After` when any of them cannot be
stored.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs_proto.replicate import webhook_job_id, webhook_traceparent
from jobs_runtime import tracing
from jobs_runtime.buckets import Monotonic
from jobs_runtime.web import EscapedQueryString
from webhook_ingest.adapters.answers import (
    LOGGED_ID_CHARS,
    Refusal,
    answer,
    http_error,
    internal_error,
    rate_limited,
    refused,
    unauthenticated,
)
from webhook_ingest.adapters.body import BodyReader
from webhook_ingest.handlers import ingest_webhook
from webhook_ingest.limits import IngressLimits, LargeBodySlots, client_source, source_rate_limiter
from webhook_ingest.ports import (
    EventStore,
    NoObserver,
    OutputSink,
    ProgressSink,
    ResultStore,
    WebhookObserver,
    WebhookParking,
)
from webhook_ingest.verify import (
    ID_HEADER,
    Clock,
    VerificationError,
    VerifiedWebhook,
    WebhookVerifier,
    system_clock,
)

PATH: Final = "/api/webhooks/replicate"
# HMAC over a big body takes milliseconds; beyond this size it runs off the event loop.
_VERIFY_INLINE_BYTES: Final = 256 * 1024


class _WebhookField(msgspec.Struct):
    webhook: str | None = None


_webhook_field: Final = msgspec.json.Decoder(_WebhookField)


def signed_webhook_url(body: bytes) -> str | None:
    """The signed body's `webhook` URL, whose `traceparent` is the trace the prediction was
    created in (never the request URL's, which is outside the signature); None without."""
    try:
        return _webhook_field.decode(body).webhook
    except (msgspec.DecodeError, RecursionError):
        return None  # the handler refuses such a body


def webhook_app(
    *,
    verifier: WebhookVerifier,
    events: EventStore,
    progress: ProgressSink,
    results: ResultStore,
    parking: WebhookParking,
    max_bytes: int,
    limits: IngressLimits | None = None,
    clock: Clock = system_clock,
    monotonic: Monotonic = time.monotonic,
    observer: WebhookObserver | None = None,
    output: OutputSink | None = None,
) -> Starlette:
    """The Starlette app of the webhook endpoint over the given ports.

    `clock` stamps events; `monotonic` refills the rate limiter's buckets; `observer` is told
    what became of each request; `output` takes the text of `output` webhooks (None: not
    logged).
    """
    limits = limits or IngressLimits()
    observer = observer or NoObserver()
    rate_limiter = source_rate_limiter(limits, monotonic)
    slots = LargeBodySlots(limits.max_large_bodies, limits.max_large_bodies_per_source)

    async def replicate_webhook(request: Request) -> Response:
        source = client_source(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            limits.trusted_proxy_hops,
        )
        context = {
            "webhook_id": request.headers.get(ID_HEADER, "")[:LOGGED_ID_CHARS],
            "source": source,
        }
        wait_s = rate_limiter.take(source)
        if wait_s is not None:
            return refused(rate_limited(wait_s), context, observer)

        reading = BodyReader(request, max_bytes, slots, source, verifier, observer)
        try:
            read = await reading.read(limits.read_timeout_s)
            if isinstance(read, Refusal):
                return refused(read, context, observer)
            return await verified_and_ingested(request, read, context)
        finally:
            # The body is held until the answer is decided; only then is its slot free.
            reading.release()

    async def verified_and_ingested(
        request: Request, body: bytes, context: dict[str, str]
    ) -> Response:
        try:
            if len(body) > _VERIFY_INLINE_BYTES:
                webhook = await asyncio.to_thread(verifier.verify, request.headers, body)
            else:
                webhook = verifier.verify(request.headers, body)
        except VerificationError as exc:
            return refused(unauthenticated(exc), context, observer)

        job_param = request.query_params.get("job")
        if not tracing.ENABLED:
            return await ingested(webhook, job_param, context)
        url = signed_webhook_url(webhook.body)
        attributes = {"http.request.method": "POST", "http.route": PATH}
        if (job_id := webhook_job_id(url)) is not None:
            attributes["job.id"] = str(job_id)
        with tracing.span(
            f"POST {PATH}",
            kind="server",
            parent=tracing.from_traceparent(webhook_traceparent(url)),
            attributes=attributes,
        ):
            return await ingested(webhook, job_param, context)

    async def ingested(
        webhook: VerifiedWebhook, job_param: str | None, context: dict[str, str]
    ) -> Response:
        outcome = await ingest_webhook(
            webhook,
            job_param,
            events=events,
            progress=progress,
            results=results,
            parking=parking,
            now=clock(),
            output=output,
        )
        return answer(outcome, context, observer)

    return Starlette(
        routes=[Route(PATH, replicate_webhook, methods=["POST"])],
        middleware=[Middleware(EscapedQueryString)],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
