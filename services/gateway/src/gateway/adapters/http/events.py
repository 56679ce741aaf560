"""The event routes, `GET /api/jobs/{jobId}/events`, `GET /api/events` and the output route
`GET /api/jobs/{jobId}/output`: each takes a slot of the stream caps and a hub subscription,
reads the current state through the handlers, and answers a `text/event-stream` that releases
both however it ends."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway import handlers, output, realtime
from gateway.hub import Hub, Subscription
from gateway.ports import GatewayObserver
from gateway.streams import StreamSlot
from jobs_proto.api import JobView

from .checks import authorize, authorize_job_reader
from .ports import GatewayPorts
from .problems import answered, not_found, refuse

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
    """A `text/event-stream` answer that releases its stream slot and hub subscription however
    it ends: the terminal state, the client gone (even before the first byte), shutdown.

    A plain ASGI answer, not a Starlette `StreamingResponse`: with 10,000 streams open what
    each holds counts. One task per stream, not Starlette's two (uvicorn speaks ASGI 2.3, for
    which `StreamingResponse` adds a task that only waits for the disconnect), and no headers
    or background objects of its own. A departed client is noticed instead when a keepalive
    is due, which the streams send after `SSE_KEEPALIVE_S` of quiet.
    """

    __slots__ = ("_chunks", "_held", "_observer")
    status_code: Final = 200

    def __init__(self, chunks: AsyncIterator[bytes], held: Held, observer: GatewayObserver) -> None:
        self._chunks = chunks
        self._held = held
        self._observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._observer.stream_opened()
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
            self._held.release()


class Held:
    """What an opening stream holds (its slot of the stream caps, its hub subscription) until
    `release`, called once the answer is not a stream after all (`204`, `404`, an error) or
    by `EventStream` when the stream ends. Two fields, not an `ExitStack`: thousands live."""

    __slots__ = ("slot", "subscription")

    def __init__(self, slot: StreamSlot) -> None:
        self.slot = slot
        self.subscription: Subscription | None = None

    def release(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
        self.slot.close()


async def _client_gone(receive: Receive) -> bool:
    """Whether the client hung up, without waiting when it did not: uvicorn answers a
    disconnect at once and otherwise waits for one, so a moment's wait tells them apart."""
    try:
        async with asyncio.timeout(0.01):
            message = await receive()
    except TimeoutError:
        return False
    return bool(message["type"] == "http.disconnect")


class StreamRoute:
    """An event route's ASGI endpoint: Starlette calls it as it is (no `request_response`
    wrapper), so an open stream keeps no `Request` nor the wrapper's frames alive; the opening
    is answered (refusals, log line) like every other route's."""

    __slots__ = ("_open",)

    def __init__(self, open_stream: Endpoint, observer: GatewayObserver) -> None:
        self._open = answered(open_stream, observer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._open(Request(scope, receive))
        await response(scope, receive, send)


def hold_stream(ports: GatewayPorts, user_id: str) -> Held:
    """One more open stream of `user_id`, or a refusal (`429` at `USER_MAX_STREAMS`, `503` at
    `MAX_STREAMS`). Every stream route calls this first, before any read: a refusal costs no
    job-store request; the route releases what it holds unless it hands it to `EventStream`."""
    return Held(ports.streams.take(user_id))


def _reader(ports: GatewayPorts, user_id: str, *, whole: bool = False) -> realtime.Reload:
    """Reads a job again for a stream (a change announced without its output)."""

    async def reload(job_id: uuid.UUID) -> JobView | None:
        outcome = await handlers.read(handlers.ReadJob(user_id, job_id, whole=whole), ports.deps)
        if isinstance(outcome, handlers.Refused):
            raise outcome.reason
        return outcome.view if isinstance(outcome, handlers.Found) else None

    return reload


def job_events(ports: GatewayPorts, hub: Hub) -> StreamRoute:
    async def job_events(request: Request) -> Response:
        user_id, job_id = await authorize_job_reader(
            ports.verifier, ports.rate, request, query_token=True
        )
        if job_id is None:
            raise not_found()
        held = hold_stream(ports, user_id)
        try:
            # Subscribed before the state is read: no change can fall in between.
            subscription = held.subscription = hub.open_job(job_id)
            outcome = await handlers.read(handlers.ReadJob(user_id, job_id), ports.deps)
            if isinstance(outcome, handlers.Refused):
                raise refuse(outcome)
            if isinstance(outcome, handlers.NotFound):
                raise not_found()
            view = outcome.view
            hub.note_view(view, user_id)
            known = realtime.known_version(request.headers.get("last-event-id"), view)
            if realtime.already_final(view, known):
                held.release()
                return Response(status_code=204, headers={"Cache-Control": "no-store"})
            reload = _reader(ports, user_id)
            chunks = realtime.job_events(view, known, subscription, reload, hub.policy)
        except BaseException:
            held.release()
            raise
        # Starlette only calls what an endpoint returns (and the log reads `status_code`).
        return EventStream(chunks, held, ports.observer)  # type: ignore[return-value]

    return StreamRoute(job_events, ports.observer)


def user_events(ports: GatewayPorts, hub: Hub) -> StreamRoute:
    async def user_events(request: Request) -> Response:
        user_id = await authorize(ports.verifier, ports.rate, request, query_token=True)
        held = hold_stream(ports, user_id)
        try:
            subscription = held.subscription = hub.open_user(user_id)
            since = realtime.parse_position(request.headers.get("last-event-id"))
            views = await handlers.jobs_to_replay(user_id, ports.store, since)
            for view in views:
                # Owners and predictions: the user's running jobs become watched.
                hub.note_view(view, user_id)
            reload = _reader(ports, user_id)
            chunks = realtime.user_events(views, subscription, reload, hub.policy)
        except BaseException:
            held.release()
            raise
        return EventStream(chunks, held, ports.observer)  # type: ignore[return-value]

    return StreamRoute(user_events, ports.observer)


def job_output(ports: GatewayPorts, hub: Hub) -> StreamRoute:
    async def job_output(request: Request) -> Response:
        user_id, job_id = await authorize_job_reader(
            ports.verifier, ports.rate, request, query_token=True
        )
        if job_id is None:
            raise not_found()
        try:
            offset = output.parse_offset(
                request.query_params.getlist(output.OFFSET_PARAMETER),
                request.headers.get("last-event-id"),
            )
        except handlers.InvalidRequest as exc:
            raise refuse(handlers.Refused(exc)) from None
        held = hold_stream(ports, user_id)
        try:
            # Subscribed before the job and its log are read: no change nor chunk falls
            # in between.
            subscription = held.subscription = hub.open_output(job_id)
            outcome = await handlers.read(handlers.ReadJob(user_id, job_id, whole=True), ports.deps)
            if isinstance(outcome, handlers.Refused):
                raise refuse(outcome)
            if isinstance(outcome, handlers.NotFound):
                raise not_found()
            hub.note_view(outcome.view, user_id)
            chunks = output.job_output(
                outcome.view,
                offset,
                subscription,
                ports.output_log,
                _reader(ports, user_id, whole=True),
                hub.policy,
            )
        except BaseException:
            held.release()
            raise
        return EventStream(chunks, held, ports.observer)  # type: ignore[return-value]

    return StreamRoute(job_output, ports.observer)
