"""`GET /api/jobs/{jobId}/output` as Server-Sent Events: the job's text from the client's
offset on, read from the output log while the prediction runs (catch-up from the log, then the
chunks the hub relays live, merged by offset) and from the job's stored `output` once it has
ended, then `event: done`.

Offsets count Unicode code points, as the log's chunks do: `beyond` drops what the client
already has and tells a gap (something missed), after which the log is read again. No NATS or
HTTP here: the NATS adapter reads the log and feeds the hub, the HTTP adapter sends the text.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Final, Protocol

import msgspec

from jobs_proto.api import JobChanged, JobView, OutputDone, OutputText, ProblemDetail
from jobs_proto.output import OutputChunk, OutputGap, beyond
from jobs_proto.status import is_terminal
from jobs_runtime.errors import Unavailable

from .hub import Dropped, OutputAppended, Reconnect, StreamPolicy, Subscription
from .realtime import KEEPALIVE, retry_hint
from .validation import InvalidRequest

OFFSET_PARAMETER: Final = "offset"
LAST_EVENT_ID: Final = "Last-Event-ID"
# Past any text a job can have (the stream's messages are 256 KiB, a job's life bounded): an
# offset longer than this is still a valid offset, just past the end, without a huge `int`.
_MAX_DIGITS: Final = 15
_FAR: Final = 10**_MAX_DIGITS

# Reads a job again (its owner's view, with its output), for a change announced without it.
Reload = Callable[[uuid.UUID], Awaitable[JobView | None]]

_encoder: Final = msgspec.json.Encoder()


class OutputReader(Protocol):
    async def read(self, job_id: uuid.UUID, prediction_id: str, held: int) -> Sequence[OutputChunk]:
        """The chunks of the prediction's log, in order, that hold characters past the first
        `held` (as stored now; empty when none); `Unavailable` when the log cannot be read."""


class NoOutputLog:
    """A log that is always empty: for tests and tools without NATS (the text then comes from
    the job's stored `output` once it ends)."""

    async def read(self, job_id: uuid.UUID, prediction_id: str, held: int) -> Sequence[OutputChunk]:
        return ()


# --- the request ----------------------------------------------------------------------------


def _offset(raw: str, name: str, errors: list[ProblemDetail]) -> int | None:
    value = raw.strip()
    if not value.isascii() or not value.isdigit():
        errors.append(
            ProblemDetail(
                parameter=name,
                detail=f"must be a non-negative integer (characters), got {raw[:40]!r}",
            )
        )
        return None
    return int(value) if len(value) <= _MAX_DIGITS else _FAR


def parse_offset(offsets: Iterable[str], last_event_id: str | None) -> int:
    """The characters the client already has: `Last-Event-ID` (what `EventSource` sends when it
    reconnects, so it wins over the URL's `?offset=`, which a reconnect sends again unchanged),
    else `?offset=`, else 0. Either one that is not a non-negative integer is `InvalidRequest`
    naming it."""
    errors: list[ProblemDetail] = []
    values = list(offsets)
    from_query: int | None = None
    if len(values) > 1:
        errors.append(
            ProblemDetail(parameter=OFFSET_PARAMETER, detail="give `offset` at most once")
        )
    elif values:
        from_query = _offset(values[0], OFFSET_PARAMETER, errors)
    from_header = None if last_event_id is None else _offset(last_event_id, LAST_EVENT_ID, errors)
    if errors:
        raise InvalidRequest(errors, "the output offset is not valid")
    if from_header is not None:
        return from_header
    return from_query or 0


# --- the merge ------------------------------------------------------------------------------


class Delivered:
    """How many characters the client holds; `take` answers what of a chunk is new to it (""
    when it holds all of it) and counts it as delivered. Raises `OutputGap` for a chunk that
    starts past what the client holds."""

    __slots__ = ("held",)

    def __init__(self, held: int) -> None:
        self.held = held

    def take(self, offset: int, text: str) -> str:
        new = beyond(offset, text, self.held)
        self.held += len(new)
        return new

    def rest_of(self, output: str) -> str:
        """What of a whole text (from offset 0) the client lacks."""
        return self.take(0, output)


# --- Server-Sent Events text ------------------------------------------------------------------


def output_event(text: str, end: int) -> bytes:
    """`event: output`; its `id:` counts the characters delivered with it included."""
    data = _encoder.encode(OutputText(text=text))
    return b"event: output\nid: " + str(end).encode() + b"\ndata: " + data + b"\n\n"


def done_event(view: JobView) -> bytes:
    data = _encoder.encode(OutputDone(status=view.status, error=view.error))
    return b"event: done\ndata: " + data + b"\n\n"


# --- the stream -------------------------------------------------------------------------------


async def _catch_up(
    delivered: Delivered, reader: OutputReader, job_id: uuid.UUID, prediction_id: str
) -> AsyncIterator[bytes]:
    """What the log holds past what the client has."""
    for chunk in await reader.read(job_id, prediction_id, delivered.held):
        try:
            new = delivered.take(chunk.offset, chunk.text)
        except OutputGap:
            return  # the log is contiguous: a reader that skipped a chunk is read again later
        if new:
            yield output_event(new, delivered.held)


async def _final(view: JobView, reload: Reload, omitted: bool) -> JobView:
    """A terminal job with its output, read again when its announcement left it out."""
    if not omitted:
        return view
    try:
        again = await reload(view.job_id)
    except Exception:  # the log below still has the text
        return view
    return again if again is not None and again.version >= view.version else view


async def _ending(
    view: JobView, delivered: Delivered, reader: OutputReader, prediction_id: str | None
) -> AsyncIterator[bytes]:
    """The text past what the client has, then `done`: from the stored `output` (null: none),
    or from the log when the job's output could not be read with it."""
    if view.output is not None:
        new = delivered.rest_of(view.output)
        if new:
            yield output_event(new, delivered.held)
    elif prediction_id is not None and view.error is None:
        async for event in _catch_up(delivered, reader, view.job_id, prediction_id):
            yield event
    yield done_event(view)


async def job_output(
    current: JobView,
    offset: int,
    subscription: Subscription,
    reader: OutputReader,
    reload: Reload,
    policy: StreamPolicy,
) -> AsyncIterator[bytes]:
    """The output stream of one job from `offset` (characters the client has) on, ending with
    `done` once the job is terminal.

    `subscription` (the hub's `open_output`) was opened before `current` was read and before
    the log is read, so no change nor chunk falls in between: a chunk already held is dropped,
    one past what is held (a gap) sends the stream back to the log.
    """
    delivered = Delivered(offset)
    view = current
    omitted = False
    prediction = view.prediction_id
    try:
        if prediction is not None and not is_terminal(view.status):
            async for event in _catch_up(delivered, reader, view.job_id, prediction):
                yield event
        while not is_terminal(view.status):
            update = await subscription.next(policy.keepalive_s)
            if update is None:
                yield KEEPALIVE
            elif isinstance(update, OutputAppended):
                if update.prediction_id != prediction:
                    continue  # another prediction's, or the job's not yet known: read on binding
                chunk = update.chunk
                try:
                    new = delivered.take(chunk.offset, chunk.text)
                except OutputGap:
                    async for event in _catch_up(delivered, reader, view.job_id, prediction):
                        yield event
                    try:
                        new = delivered.take(chunk.offset, chunk.text)
                    except OutputGap:
                        continue  # still missing: the next chunk or the job's end covers it
                if new:
                    yield output_event(new, delivered.held)
            elif isinstance(update, JobChanged):
                if update.job.version <= view.version:
                    continue
                view, omitted = update.job, update.output_omitted
                if prediction is None and view.prediction_id is not None:
                    # Bound to its prediction now: what it wrote before this is in the log.
                    prediction = view.prediction_id
                    if not is_terminal(view.status):
                        async for event in _catch_up(delivered, reader, view.job_id, prediction):
                            yield event
        view = await _final(view, reload, omitted)
        async for event in _ending(view, delivered, reader, prediction):
            yield event
    except Reconnect as reconnect:
        yield retry_hint(reconnect.retry_ms)
    except Unavailable:
        # The log did not answer: the client reconnects with what it has (`Last-Event-ID`).
        yield retry_hint(policy.retry_ms)
    except Dropped:
        return
