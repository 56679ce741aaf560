"""The relay's progress: each stream's text so far, sent as `JobProgress` (the `/events` route's
`event: progress`) at most once per tick, only when text was added, since streaming job types no
longer ask Replicate for `output` webhooks.

The text is kept in memory per stream, bounded by the answer's length and capped at
`MAX_PROGRESS_BYTES`; past the cap a stream's progress stops (the output log still gets all of
it). `seq` is the text's length in characters: it only grows within a stream, and a relay taking
a stream over starts again from 0, so what it sends before it has caught up is dropped by the
gateway (which keeps only a `seq` above the last one it sent).
"""

from __future__ import annotations

import logging
import uuid
from typing import Final

from ai_runner.ports import ProgressSink, RelayObserver
from jobs_proto.api import JobProgress
from jobs_proto.output import beyond
from jobs_runtime.errors import Unavailable

log = logging.getLogger(__package__)

# Replicate's own rate of `output` webhooks per prediction, which progress replaces.
PROGRESS_EVERY_S: Final = 0.5
# UTF-8 bytes of text kept per stream: a message of that much text fits NATS's default 1 MiB
# payload with room for JSON escaping. Answers are far shorter (8192 tokens is about 32 KiB).
MAX_PROGRESS_BYTES: Final = 512 * 1024


class ProgressFeed:
    """One stream's text so far, from whatever offsets it is offered (connections replay it
    from 0, the fallback offers the whole text each time)."""

    def __init__(self, job_id: uuid.UUID, prediction_id: str, max_bytes: int) -> None:
        self.job_id = job_id
        self.prediction_id = prediction_id
        self._max_bytes = max_bytes
        self._parts: list[str] = []
        self._chars = 0
        self._bytes = 0
        self._sent_chars = 0
        self.capped = False

    @property
    def chars(self) -> int:
        return self._chars

    def add(self, offset: int, text: str) -> None:
        """Keep what of `text` (the characters from `offset` on) is new."""
        if self.capped:
            return
        missing = beyond(offset, text, self._chars)
        if not missing:
            return
        size = len(missing.encode("utf-8", errors="surrogatepass"))
        if self._bytes + size > self._max_bytes:
            self.capped = True
            self._parts.clear()
            log.warning(
                "progress stopped: the text passed %d bytes (the output log still gets it)",
                self._max_bytes,
                extra={"job_id": str(self.job_id), "prediction_id": self.prediction_id},
            )
            return
        self._parts.append(missing)
        self._chars += len(missing)
        self._bytes += size

    def take(self) -> JobProgress | None:
        """The progress to send now: None when no text was added since the last one."""
        if self.capped or self._chars == self._sent_chars:
            return None
        text = "".join(self._parts)
        # Kept joined: the next take joins one string and what came since, not every token.
        self._parts = [text]
        self._sent_chars = self._chars
        return JobProgress(
            job_id=self.job_id, output=text, seq=self._chars, prediction_id=self.prediction_id
        )

    def unsent(self) -> None:
        """The last progress taken did not go out: the next `take` gives the text again."""
        self._sent_chars = -1


class ProgressBoard:
    """The feeds of every stream this relay reads; `tick` (every `PROGRESS_EVERY_S`, one timer
    for all streams) sends each one's progress if text was added. A failed send is counted and
    logged once per run of failures; the next tick sends the text again."""

    def __init__(
        self,
        sink: ProgressSink,
        observer: RelayObserver,
        max_bytes: int = MAX_PROGRESS_BYTES,
    ) -> None:
        self._sink = sink
        self._observer = observer
        self._max_bytes = max_bytes
        self._feeds: set[ProgressFeed] = set()
        self._failing = False

    def __len__(self) -> int:
        return len(self._feeds)

    def open(self, job_id: uuid.UUID, prediction_id: str) -> ProgressFeed:
        feed = ProgressFeed(job_id, prediction_id, self._max_bytes)
        self._feeds.add(feed)
        return feed

    def close(self, feed: ProgressFeed) -> None:
        self._feeds.discard(feed)

    async def tick(self) -> None:
        for feed in list(self._feeds):
            await self._send(feed)

    async def finish(self, feed: ProgressFeed) -> None:
        """The stream ended: its last progress, if text came since the previous one."""
        self._feeds.discard(feed)
        await self._send(feed)

    async def _send(self, feed: ProgressFeed) -> None:
        progress = feed.take()
        if progress is None:
            return
        try:
            await self._sink.send(progress)
        except Unavailable as exc:
            feed.unsent()
            self._observer.progress_sent(False)
            if not self._failing:
                log.warning("progress not sent (counted, logged once until it works): %s", exc)
            self._failing = True
            return
        self._observer.progress_sent(True)
        if self._failing:
            log.info("progress is sent again")
        self._failing = False
