"""Reading the whole `JOBS` stream from its first message, for `job-store replay`.

An ephemeral pull consumer without acks (nothing is settled: the durable consumer of the live
service is untouched), fetched in batches until the stream's end as it was when reading began.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js import api as js_api

from jobs_proto.events import EVENT_KINDS, AnyJobEvent, decode_event
from jobs_proto.subjects import SubjectError, Subjects

log = logging.getLogger(__name__)

_FETCH_TIMEOUT_S: Final = 2.0


class StreamReader:
    """Yields the stream's events in order, batch by batch; counts what it skips."""

    def __init__(
        self, js: JetStreamContext, stream: str, subjects: Subjects, *, batch: int = 256
    ) -> None:
        self._js = js
        self._stream = stream
        self._subjects = subjects
        self._batch = batch
        self.skipped = 0

    async def batches(self) -> AsyncIterator[list[AnyJobEvent]]:
        info = await self._js.stream_info(self._stream)
        last = info.state.last_seq
        if info.state.messages == 0:
            return
        subscription = await self._js.pull_subscribe(
            self._subjects.all_events,
            stream=self._stream,
            config=js_api.ConsumerConfig(
                ack_policy=js_api.AckPolicy.NONE,
                deliver_policy=js_api.DeliverPolicy.ALL,
                inactive_threshold=60.0,
            ),
        )
        try:
            seen = 0
            while seen < last:
                try:
                    messages = await subscription.fetch(self._batch, timeout=_FETCH_TIMEOUT_S)
                except NatsTimeoutError:
                    break  # nothing more (the last messages aged out meanwhile)
                events: list[AnyJobEvent] = []
                for msg in messages:
                    seen = msg.metadata.sequence.stream
                    event = self._event(msg.subject, msg.data)
                    if event is not None:
                        events.append(event)
                if events:
                    yield events
                if messages and messages[-1].metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def _event(self, subject: str, data: bytes) -> AnyJobEvent | None:
        """The message as an event, or None (counted, logged) when the live consumer would
        not apply it either: a bad subject or body (parked there), a kind this release lacks."""
        try:
            kind, job_id = self._subjects.parse(subject)
        except SubjectError:
            self.skipped += 1
            return None
        if kind not in EVENT_KINDS:
            log.warning("event of an unknown kind skipped", extra={"kind": kind})
            self.skipped += 1
            return None
        try:
            event = decode_event(data)
        except msgspec.DecodeError:
            self.skipped += 1
            return None
        if event.kind != kind or event.job_id != job_id:
            self.skipped += 1
            return None
        return event
