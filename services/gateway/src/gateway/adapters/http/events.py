"""The event routes, `GET /api/jobs/{jobId}/events` and `GET /api/events`: each takes a slot
of the stream caps and a hub subscription, reads the current state through the handlers, and
answers a `text/event-stream` that releases both however it ends."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import handlers, realtime
from gateway.adapters import metrics
from gateway.realtime import Hub
from jobs_proto.api import JobView

from .checks import authorize, parse_job_id
from .ports import GatewayPorts
from .problems import not_found, refuse

Endpoint = Callable[[Request], Awaitable[Response]]

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


def _reader(ports: GatewayPorts, user_id: str) -> realtime.Reload:
    """Reads a job again for a stream (a change announced without its output)."""

    async def reload(job_id: uuid.UUID) -> JobView | None:
        outcome = await handlers.read(handlers.ReadJob(user_id, job_id), ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise outcome.reason
        return outcome.view if isinstance(outcome, handlers.Found) else None

    return reload


def job_events(ports: GatewayPorts, hub: Hub) -> Endpoint:
    async def job_events(request: Request) -> Response:
        user_id = await authorize(ports.verifier, ports.rate, request, query_token=True)
        job_id = parse_job_id(request.path_params["job_id"])
        if job_id is None:
            raise not_found()
        with ExitStack() as cleanup:
            hold_stream(ports, user_id, cleanup)
            # Subscribed before the state is read: no change can fall in between.
            subscription = cleanup.enter_context(hub.watch_job(job_id))
            outcome = await handlers.read(handlers.ReadJob(user_id, job_id), ports.deps)
            if isinstance(outcome, handlers.Refused):
                raise refuse(outcome)
            if isinstance(outcome, handlers.NotFound):
                raise not_found()
            view = outcome.view
            known = realtime.known_version(request.headers.get("last-event-id"), view)
            if realtime.already_final(view, known):
                return Response(status_code=204, headers={"Cache-Control": "no-store"})
            reload = _reader(ports, user_id)
            chunks = realtime.job_events(view, known, subscription, reload, hub.policy)
            return _streaming(chunks, cleanup.pop_all())

    return job_events


def user_events(ports: GatewayPorts, hub: Hub) -> Endpoint:
    async def user_events(request: Request) -> Response:
        user_id = await authorize(ports.verifier, ports.rate, request, query_token=True)
        with ExitStack() as cleanup:
            hold_stream(ports, user_id, cleanup)
            subscription = cleanup.enter_context(hub.watch_user(user_id))
            since = realtime.parse_position(request.headers.get("last-event-id"))
            views = await handlers.jobs_to_replay(user_id, ports.store, since)
            for view in views:
                hub.note_owner(view.job_id, user_id)
            reload = _reader(ports, user_id)
            chunks = realtime.user_events(views, subscription, reload, hub.policy)
            return _streaming(chunks, cleanup.pop_all())

    return user_events
