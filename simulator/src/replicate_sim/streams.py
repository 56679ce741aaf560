"""`urls.stream`: a prediction's text as Replicate's Server-Sent Events, one reader at a time.

The format is what the `replicate` package's `EventSource` parses:

    event: output
    id: 12:0
    data: first line of the new text
    data: its next line

`output` carries the text written since the previous event, one `data:` line per line of it (a
text ending in a newline ends with an empty `data:` line, so it comes back whole when the lines
are joined with "\\n"). A failure sends `error` with `{"detail": "..."}`; every stream ends with
`done`: `{}`, `{"reason": "canceled"}` (also for `aborted`) or `{"reason": "error"}`. An id is
`"{n}:0"`, `n` the tokens written up to that event (`done` and `error` count one more each):
increasing, naming the same place in the text on every connection, and otherwise opaque (the
relay must count characters itself, as Replicate promises nothing about its ids).

Each connection replays the text from its first token (Replicate offers no resume), then follows
the prediction live, waking when its next token is due (at most every `SIM_STREAM_TICK_S`,
0.02 s: faster text shares an event) or when a cancel ends it; a prediction with no reader has
no task and costs nothing but its text. A connection that gets no event for
`SIM_STREAM_IDLE_S` is answered `408` if it had none yet, and otherwise ends (the body closes
without `done`). `streamDropRate` cuts a connection (its TCP connection closed, no `done`) after
a random number of tokens, at least one event in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import msgspec
from starlette.responses import Response, StreamingResponse

from replicate_sim.engine import Simulator
from replicate_sim.model import MODEL_ERROR, FinalStatus, Prediction, ending, token_due
from replicate_sim.outputs import token_ends

# Readers wake a hair after a token is due, so that the timer never wakes a reader just before it.
WAKE_SLACK_S = 0.0005

_DONE: dict[FinalStatus, dict[str, str]] = {
    "succeeded": {},
    "failed": {"reason": "error"},
    "canceled": {"reason": "canceled"},
    "aborted": {"reason": "canceled"},
}


class StreamCut(Exception):
    """Raised inside a stream to close its connection without ending the body."""


class _QuietCuts(logging.Filter):
    """uvicorn logs any error that ends a response midway; a cut is meant, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamCut))


def quiet_cuts() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietCuts) for f in server_log.filters):
        server_log.addFilter(_QuietCuts())


def sse(event: str, event_id: int, data: str) -> bytes:
    """One event: each line of `data` a `data:` line of its own."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\nid: {event_id}:0\n{lines}\n".encode()


async def _events(sim: Simulator, prediction: Prediction) -> AsyncIterator[bytes]:
    """The stream from its first token; returns early when nothing happens for the idle time."""
    idle_s, tick_s = sim.settings.sim_stream_idle_s, sim.settings.sim_stream_tick_s
    text = "".join(prediction.chunks)
    ends = token_ends(prediction.chunks)
    cut_after = sim.stream_cut(len(ends))
    sent = 0
    last_event = time.monotonic()
    while True:
        written, final = sim.written(prediction)
        if written > sent:
            yield sse("output", written, text[ends[sent - 1] if sent else 0 : ends[written - 1]])
            sent, last_event = written, time.monotonic()
            if cut_after is not None and sent >= cut_after:
                raise StreamCut
        if final is not None:
            async for event in _ending(final, sent, cut_after is not None):
                yield event
            return
        idle_left = last_event + idle_s - time.monotonic()
        if idle_left <= 0:
            return
        now = sim.clock()
        # An aborted prediction never writes: nothing is due before its end.
        if sent < len(ends) and not prediction.aborts:
            # On the text's own clock, so that waking a little late never adds up.
            due = token_due(prediction, sent + max(1, prediction.tokens_per_s * tick_s))
        else:
            due = ending(prediction)[0]
        await sim.wait_final(prediction, min(max(0.0, due - now) + WAKE_SLACK_S, idle_left))


async def _ending(final: FinalStatus, sent: int, cut: bool) -> AsyncIterator[bytes]:
    """`error` if it failed, then `done`, unless the connection is to be cut before it."""
    events = sent
    if final == "failed":
        events += 1
        yield sse("error", events, msgspec.json.encode({"detail": MODEL_ERROR}).decode())
    if cut and events:
        raise StreamCut
    yield sse("done", events + 1, msgspec.json.encode(_DONE[final]).decode())


async def serve(sim: Simulator, prediction: Prediction) -> Response | None:
    """The stream's response, or None when nothing came within the idle time (`408`)."""
    events = _events(sim, prediction)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for event in events:
            yield event

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
