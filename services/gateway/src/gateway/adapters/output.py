"""Reads a prediction's output log (`<JOBS>_OUTPUT`) for `/output`'s catch-up: the log's last
chunk first, by one direct get (all a client resuming near the end needs, and the whole log
while it is one chunk), then, only when the client lacks more than that, the subject's chunks
in order through an ordered consumer.

Measured on one local nats-server (a log of `n` chunks read from its start, mean of 5):
direct gets by `next_by_subj`, one request per chunk, took 0.4 / 3.1 / 40 / 329 ms for
n = 1 / 10 / 100 / 1,000; an ordered consumer 1.8 / 2.6 / 17 / 83 ms. Hence the one direct
get for the end, and the consumer past it (a per-token relay writes long logs). The consumer
is ephemeral, in memory, and removed by the server `_CONSUMER_IDLE_S` after it is left.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from jobs_proto.output import OutputChunk, decode_chunk
from jobs_proto.subjects import SubjectError, Subjects
from jobs_runtime.errors import Unavailable

log = logging.getLogger(__name__)

# How long the server keeps a catch-up consumer nobody reads from any more.
_CONSUMER_IDLE_S: Final = 5.0


class NatsOutputLog:
    """The `OutputReader` over JetStream."""

    def __init__(self, nc: NATS, stream: str, subjects: Subjects, timeout_s: float = 2.0) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=timeout_s)
        self._stream = stream
        self._subjects = subjects
        self._timeout_s = timeout_s

    async def read(self, job_id: uuid.UUID, prediction_id: str, held: int) -> Sequence[OutputChunk]:
        try:
            subject = self._subjects.output(job_id, prediction_id)
        except SubjectError:
            # No writer can log such a prediction's text: the stored output comes at the end.
            return ()
        if not self._nc.is_connected:
            raise Unavailable("not connected to NATS")
        try:
            return await self._read(subject, held)
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"output log not readable: {exc!r}") from exc

    async def _read(self, subject: str, held: int) -> Sequence[OutputChunk]:
        try:
            last = await self._js.get_last_msg(self._stream, subject, direct=True)
        except NotFoundError:
            return ()
        if last.data is None or last.seq is None:
            return ()
        end = self._decode(subject, last.data)
        if end is None or end.end <= held:
            return ()
        if end.offset <= held:
            return (end,)
        chunks: list[OutputChunk] = []
        reading = await self._js.subscribe(
            subject,
            stream=self._stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            inactive_threshold=_CONSUMER_IDLE_S,
        )
        try:
            while True:
                msg = await reading.next_msg(timeout=self._timeout_s)
                if msg.metadata.sequence.stream >= last.seq:
                    break
                chunk = self._decode(subject, msg.data)
                if chunk is not None and chunk.end > held:
                    chunks.append(chunk)
        finally:
            await reading.unsubscribe()
        chunks.append(end)
        return chunks

    @staticmethod
    def _decode(subject: str, data: bytes) -> OutputChunk | None:
        try:
            return decode_chunk(data)
        except msgspec.DecodeError:
            log.error("undecodable output chunk", extra={"subject": subject})
            return None
