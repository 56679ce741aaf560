"""The relay: a submitted prediction's `urls.stream` read into its output log, exactly once per
character however often the connection is cut, replayed or taken over by another replica.

Replicate replays a stream from its first character on every connection and promises nothing
about its event ids, so the reader counts the characters (code points) of each connection itself
and offers each event's text at that offset; the log keeps what it lacks. What the log already
held when the connection opened is skipped without a write.

Alongside, each stream's text so far feeds its progress (`handlers/progress.py`); a stream lost
for good while the prediction runs is replaced by reading the prediction (`fallback.py`), since
streaming job types get no `output` webhooks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from ai_runner.fallback import FallbackPolicy, PollStop, ReadPace
from ai_runner.handlers.progress import ProgressBoard, ProgressFeed
from ai_runner.handlers.runner import utc_now
from ai_runner.ports import (
    LogEnd,
    NoObserver,
    OutputAppender,
    PermanentRejection,
    PredictionReader,
    RelayObserver,
    StreamDone,
    StreamError,
    StreamGone,
    StreamIdle,
    StreamSource,
    StreamText,
)
from ai_runner.reconnect import GAVE_UP, JOB_OVER, GiveUp, ReconnectPolicy
from jobs_proto.events import JobSubmitted
from jobs_proto.output import MAX_CHUNK_CHARS, OutputGap, beyond
from jobs_proto.replicate import joined_output
from jobs_runtime.errors import Unavailable

# One logger for every handler module: operators and tests select the handlers' lines by it.
log = logging.getLogger(__package__)

# Outcomes of a stream read to its end (the consumer acknowledges each).
DONE: Final = "done"
CANCELED: Final = "canceled"
GONE: Final = "gone"
NO_STREAM: Final = "no_stream"
# Text gathered while an append is in flight, at most: past it the reader waits for the append,
# so a stream never holds more than about one chunk whatever the token rate.
MAX_GATHERED_CHARS: Final = MAX_CHUNK_CHARS


class Appends:
    """One connection's writes to the log: at most one append in flight; text that arrives
    meanwhile is gathered and goes as the next append, so writes per stream stay bounded at any
    token rate while a lone token is written at once. The next append is started by the last
    one's completion, not by the reader, which may be waiting for the network."""

    def __init__(
        self,
        log: OutputAppender,
        job_id: uuid.UUID,
        prediction_id: str,
        known: LogEnd,
        observer: RelayObserver,
    ) -> None:
        self._log = log
        self._job_id = job_id
        self._prediction_id = prediction_id
        self.known = known
        self._observer = observer
        self._flight: asyncio.Task[None] | None = None
        self._flight_end = 0
        self._gathered: list[str] = []
        self._gathered_at = 0
        self._gathered_chars = 0
        self._failure: BaseException | None = None

    @property
    def covered(self) -> int:
        """Characters stored, being stored or gathered: anything below is not offered again."""
        return max(self.known.end, self._flight_end, self._gathered_at + self._gathered_chars)

    async def add(self, offset: int, text: str) -> None:
        """Offer `text`, the characters from `offset` on. Raises what a failed append raised
        (`Unavailable`, `OutputGap`): the caller connects again from the log's end."""
        self._raise_failure()
        missing = beyond(offset, text, self.covered)
        if not missing:
            return
        at = self.covered
        if self._flight is None:
            self._launch(at, missing)
            return
        while self._flight is not None and self._gathered_chars >= MAX_GATHERED_CHARS:
            await asyncio.wait({self._flight})
            self._raise_failure()
        if self._flight is None:
            # It landed meanwhile and sent what was gathered; this text follows on.
            self._launch(self.covered, beyond(at, missing, self.covered))
            return
        if not self._gathered:
            self._gathered_at = at
        self._gathered.append(missing)
        self._gathered_chars += len(missing)

    async def flush(self) -> LogEnd:
        """Wait until everything offered is stored; the log's end. Raises as `add` does."""
        while True:
            self._raise_failure()
            if self._flight is not None:
                await asyncio.wait({self._flight})
            elif self._gathered:
                self._launch_gathered()
            else:
                return self.known

    def close(self) -> None:
        """Leaving without a flush (the job ended, the service stops): stop the append."""
        if self._flight is not None:
            self._flight.cancel()
        self._gathered.clear()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _launch_gathered(self) -> None:
        text = "".join(self._gathered)
        at = self._gathered_at
        self._gathered.clear()
        self._gathered_chars = 0
        self._launch(at, text)

    def _launch(self, offset: int, text: str) -> None:
        if not text:
            return
        self._flight_end = offset + len(text)
        self._flight = asyncio.ensure_future(self._append(offset, text))
        self._flight.add_done_callback(self._landed)

    async def _append(self, offset: int, text: str) -> None:
        before = self.known.end
        self.known = await self._log.offer(
            self._job_id, self._prediction_id, offset, text, self.known
        )
        self._observer.appended(max(0, self.known.end - before))

    def _landed(self, flight: asyncio.Task[None]) -> None:
        self._flight = None
        if flight.cancelled():
            return
        failure = flight.exception()
        if failure is not None:
            self._failure = failure
            self._gathered.clear()
            self._gathered_chars = 0
            return
        if self._gathered:
            self._launch_gathered()


@dataclass(frozen=True, slots=True)
class Relay:
    """Reads streams into the output log; one `follow` per submitted prediction."""

    source: StreamSource
    log: OutputAppender
    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    observer: RelayObserver = field(default_factory=NoObserver)
    now: Callable[[], datetime] = field(default=utc_now)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    jitter: Callable[[], float] = field(default=random.random)
    # Progress of every stream (None: none sent).
    progress: ProgressBoard | None = None
    # Reads of a prediction whose stream is lost for good (None: none, the log waits).
    reader: PredictionReader | None = None
    fallback: FallbackPolicy = field(default_factory=FallbackPolicy)
    pace: ReadPace = field(default_factory=ReadPace)

    async def follow(self, event: JobSubmitted) -> str:
        """Read the prediction's stream until it is done or cannot be read any more; the
        outcome: `done`, `canceled`, `gone` (404/410), `gave_up`, `job_over` or `no_stream`
        (no URL). A stream lost for good (`gone`, `gave_up`) or unknown is followed by reading
        the prediction until it ends (with a `reader`). Progress goes out meanwhile (with a
        `progress` board). Cancel the call to stop it earlier (the job ended, the service
        stops)."""
        feed = None
        if self.progress is not None:
            feed = self.progress.open(event.job_id, event.prediction_id)
        try:
            # Without a URL (an adopted prediction, whose create answer was lost) there is no
            # stream to read: the prediction is read instead, as for a stream lost for good.
            outcome = NO_STREAM if event.stream_url is None else await self._read(event, feed)
            if outcome in (GONE, GAVE_UP, NO_STREAM) and self.reader is not None:
                await self._poll(event, self.reader, feed)
            if self.progress is not None and feed is not None:
                await self.progress.finish(feed)
            return outcome
        finally:
            if self.progress is not None and feed is not None:
                self.progress.close(feed)

    async def _read(self, event: JobSubmitted, feed: ProgressFeed | None) -> str:
        assert event.stream_url is not None
        url = event.stream_url
        job_id, prediction_id = event.job_id, event.prediction_id
        context = {"job_id": str(job_id), "prediction_id": prediction_id}
        failures = 0
        known: LogEnd | None = None
        while True:
            age_s = (self.now() - event.occurred_at).total_seconds()
            if self.policy.is_over(age_s):
                return JOB_OVER
            got_events, idle, reason = False, False, "cut"
            appends: Appends | None = None
            try:
                if known is None:
                    # From the log's end: a relay taking over, or this one after a failed
                    # write, skips what is stored.
                    known = await self.log.end(job_id, prediction_id)
                appends = Appends(self.log, job_id, prediction_id, known, self.observer)
                seen = 0
                async with aclosing(self.source.events(url)) as events:
                    async for item in events:
                        got_events = True
                        match item:
                            case StreamText(text):
                                if feed is not None:
                                    feed.add(seen, text)
                                await appends.add(seen, text)
                                seen += len(text)
                            case StreamError(detail):
                                log.info("the model failed: %s", detail, extra=context)
                            case StreamDone(ending):
                                await appends.flush()
                                return CANCELED if ending == CANCELED else DONE
                known = await appends.flush()
            except StreamGone:
                log.info("the prediction's stream is gone", extra=context)
                return GONE
            except StreamIdle:
                idle, reason = True, "idle"
            except (Unavailable, OutputGap) as exc:
                # The connection or a write failed: the log's end is read again, since a
                # failed write leaves it unknown.
                reason, known = "error", None
                log.info("stream interrupted: %s", exc, extra=context)
            finally:
                if appends is not None:
                    appends.close()
            failures = self.policy.failures_after(failures, got_events=got_events, idle=idle)
            step = self.policy.next_step(failures, age_s=age_s, jitter=self.jitter())
            if isinstance(step, GiveUp):
                log.warning("stopped reading a stream: %s", step.reason, extra=context)
                return step.reason
            self.observer.reconnected(reason)
            await self.sleep(step.delay_s)

    async def _poll(
        self, event: JobSubmitted, reader: PredictionReader, feed: ProgressFeed | None
    ) -> None:
        """The stream is lost but the prediction may still run: read it (paced) until it
        ends, offering its whole text to the log (which keeps what it lacks) and the feed."""
        job_id, prediction_id = event.job_id, event.prediction_id
        context = {"job_id": str(job_id), "prediction_id": prediction_id}
        log.info("reading the prediction instead of its stream", extra=context)
        known: LogEnd | None = None
        failures = 0
        while True:
            await self.sleep(self.pace.delay())
            final = unknown = False
            try:
                prediction = await reader.get(prediction_id)
            except PermanentRejection:
                unknown = True
            except Unavailable as exc:
                failures += 1
                log.info("fallback read failed: %s", exc, extra=context)
            else:
                failures = 0
                final = prediction.is_final
                text = joined_output(prediction.output) or ""
                if feed is not None:
                    feed.add(0, text)
                known = await self._offer_whole(job_id, prediction_id, text, known, context)
            age_s = (self.now() - event.occurred_at).total_seconds()
            step = self.fallback.next_step(
                final=final, unknown=unknown, failures=failures, age_s=age_s, jitter=self.jitter()
            )
            if isinstance(step, PollStop):
                log.info("stopped reading the prediction: %s", step.reason, extra=context)
                self.observer.fallback_ended(step.reason)
                return
            await self.sleep(step.delay_s)

    async def _offer_whole(
        self,
        job_id: uuid.UUID,
        prediction_id: str,
        text: str,
        known: LogEnd | None,
        context: dict[str, str],
    ) -> LogEnd | None:
        """Offer the text at offset 0; the log's end, or None when it is unknown (a failed
        write: the next read offers everything again, and the log skips what it holds)."""
        if not text:
            return known
        try:
            if known is None:
                known = await self.log.end(job_id, prediction_id)
            if len(text) <= known.end:
                return known
            before = known.end
            known = await self.log.offer(job_id, prediction_id, 0, text, known)
            self.observer.appended(max(0, known.end - before))
            return known
        except (Unavailable, OutputGap) as exc:
            log.info("fallback append failed: %s", exc, extra=context)
            return None
