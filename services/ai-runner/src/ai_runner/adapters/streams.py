"""The `StreamSource` port: one GET of a prediction's `urls.stream`, its Server-Sent Events parsed
by the `replicate` package's own decoder into the relay's events.

Not the package's `async_stream`: it runs `transform_output` on every chunk (a text that looks
like a URL would come back as a `FileOutput`), raises on `error` events, and gives no way to
tell a `408` (idle, connect again) from a `404` (the prediction's data is gone, stop).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Final

import aiohttp
import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport
from replicate.stream import EventSource, ServerSentEvent

from ai_runner.ports import StreamDone, StreamError, StreamEvent, StreamGone, StreamIdle, StreamText
from jobs_runtime.errors import Unavailable

# Replicate's stream URLs need no token (the simulator's neither): none is sent to a host named
# only by an API answer.
HEADERS: Final = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
GONE_STATUSES: Final = frozenset({404, 410})
IDLE: Final = 408
# Connections beyond the streams themselves, for a reconnect racing its cut predecessor's close.
SPARE_CONNECTIONS: Final = 16

_OUTPUT = ServerSentEvent.EventType.OUTPUT
_ERROR = ServerSentEvent.EventType.ERROR
_DONE = ServerSentEvent.EventType.DONE


class _Ending(msgspec.Struct):
    reason: str | None = None


class _Failure(msgspec.Struct):
    detail: str | None = None


_ending = msgspec.json.Decoder(_Ending)
_failure = msgspec.json.Decoder(_Failure)


def relay_event(sse: ServerSentEvent) -> StreamEvent | None:
    """The relay's view of one event; None for one it has no use for (`logs`)."""
    if sse.event == _OUTPUT:
        return StreamText(sse.data)
    if sse.event == _ERROR:
        try:
            return StreamError(_failure.decode(sse.data).detail or sse.data)
        except msgspec.DecodeError:
            return StreamError(sse.data)
    if sse.event == _DONE:
        try:
            return StreamDone(_ending.decode(sse.data or "{}").reason)
        except msgspec.DecodeError:
            return StreamDone()
    return None


class HttpStreamSource:
    """Streams over one httpx client (aiohttp underneath, as the creates are) whose pool holds a
    connection for every stream the relay may read at once; close it with `aclose`."""

    def __init__(self, *, max_streams: int, read_timeout_s: float) -> None:
        transport = AiohttpTransport(
            limits=httpx.Limits(
                max_connections=max_streams + SPARE_CONNECTIONS, max_keepalive_connections=64
            )
        )
        # A read timeout well past Replicate's own idle answer: a connection silent that long
        # is dead without knowing it.
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(read_timeout_s, connect=5.0, write=5.0, pool=5.0),
        )

    async def events(self, url: str) -> AsyncGenerator[StreamEvent, None]:
        try:
            async with self._http.stream("GET", url, headers=HEADERS) as response:
                if response.status_code in GONE_STATUSES:
                    raise StreamGone(f"the stream answered {response.status_code}")
                if response.status_code == IDLE:
                    raise StreamIdle("the stream had nothing to send")
                if response.status_code != 200:
                    raise Unavailable(f"the stream answered {response.status_code}")
                async for sse in _parsed(response):
                    event = relay_event(sse)
                    if event is not None:
                        yield event
        except (httpx.HTTPError, aiohttp.ClientError) as exc:
            raise Unavailable(f"stream cut: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._http.aclose()


async def _parsed(response: httpx.Response) -> AsyncGenerator[ServerSentEvent, None]:
    """The response's events. Lines are split here on "\\n" (a trailing "\\r" dropped), not by
    httpx's `aiter_lines`, which also splits on the characters `str.splitlines` knows
    (U+2028, form feed, ...) and so would cut a model's text apart. Only the line being read is
    held: a stream costs no more memory than its longest event."""
    decoder = EventSource.Decoder()
    pending = bytearray()
    # After an event type the package does not know: its lines are skipped up to its end, since
    # the decoder would otherwise keep its data for the next event.
    skipping = False
    async for chunk in response.aiter_bytes():
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            raw = pending[start:end]
            start = end + 1
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            line = raw.decode("utf-8", errors="replace")
            if skipping:
                skipping = bool(line)
                continue
            try:
                sse = decoder.decode(line)
            except ValueError:
                decoder, skipping = EventSource.Decoder(), True
                continue
            if sse is not None:
                yield sse
        del pending[:start]
