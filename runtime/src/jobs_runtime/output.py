"""The output log over JetStream: appends a prediction's text exactly once per offset, however
many writers offer the same characters (the ai-runner's relay reconnecting to Replicate's
stream, a relay picking a stream up after another's crash, webhook-ingest's `output`
webhooks), and reads it back.

Writers serialise on the subject's last sequence (JetStream's compare-and-set): a writer that
lost a race reads the log's end again and appends only what is still missing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, NotFoundError

from jobs_proto.output import (
    OutputChunk,
    beyond,
    chunk_message_id,
    decode_chunk,
    encode_chunk,
    pieces,
)
from jobs_proto.subjects import MSG_ID_HEADER, Subjects
from jobs_runtime.errors import Unavailable

# JetStream's "wrong last sequence": another writer appended since this one's cursor.
_WRONG_LAST_SEQUENCE: Final = 10071
# Writers racing for one prediction are two or three (a relay, a new relay, webhook-ingest);
# losing this many times in a row means something else is wrong.
MAX_RACES: Final = 20


@dataclass(frozen=True, slots=True)
class OutputCursor:
    """Where a prediction's log ends: `end` characters written, the last at subject `seq`
    (0: nothing written yet)."""

    end: int = 0
    seq: int = 0


class OutputLog:
    """One prediction's text in the stream `stream`, under `subjects.output(job, prediction)`."""

    def __init__(
        self, js: JetStreamContext, stream: str, subjects: Subjects, *, timeout_s: float = 5.0
    ) -> None:
        self._js = js
        self._stream = stream
        self._subjects = subjects
        self._timeout_s = timeout_s

    async def cursor(self, job_id: uuid.UUID, prediction_id: str) -> OutputCursor:
        """The log's end as stored now; raises `Unavailable` when NATS does not answer."""
        subject = self._subjects.output(job_id, prediction_id)
        try:
            msg = await self._js.get_last_msg(self._stream, subject, direct=True)
        except NotFoundError:
            return OutputCursor()
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"output log not readable: {exc!r}") from exc
        if msg.data is None or msg.seq is None:
            return OutputCursor()
        try:
            chunk = decode_chunk(msg.data)
        except msgspec.DecodeError as exc:
            raise Unavailable(f"output log of {subject} unreadable: {exc}") from exc
        return OutputCursor(chunk.end, msg.seq)

    async def offer(
        self,
        job_id: uuid.UUID,
        prediction_id: str,
        offset: int,
        text: str,
        cursor: OutputCursor | None = None,
    ) -> OutputCursor:
        """Append what of `text` (the characters from `offset` on) the log lacks; answers the
        log's new end. `cursor` is the caller's last answer, or None to read it first.

        Raises `OutputGap` when `text` starts past the log's end (the caller offers from the
        end it was given), `Unavailable` when NATS does not answer."""
        subject = self._subjects.output(job_id, prediction_id)
        if cursor is None:
            cursor = await self.cursor(job_id, prediction_id)
        for _ in range(MAX_RACES):
            missing = beyond(offset, text, cursor.end)
            if not missing:
                return cursor
            raced = False
            for chunk in pieces(cursor.end, missing):
                stored = await self._append(subject, prediction_id, chunk, cursor.seq)
                if stored is None:
                    raced = True
                    break
                cursor = OutputCursor(chunk.end, stored)
            if not raced:
                return cursor
            cursor = await self.cursor(job_id, prediction_id)
        raise Unavailable(f"output log of {subject}: lost {MAX_RACES} races in a row")

    async def _append(
        self, subject: str, prediction_id: str, chunk: OutputChunk, after_seq: int
    ) -> int | None:
        """The chunk's sequence once stored; None when another writer got there first."""
        headers = {
            MSG_ID_HEADER: chunk_message_id(prediction_id, chunk.offset),
            Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(after_seq),
        }
        try:
            ack = await self._js.publish(
                subject, encode_chunk(chunk), timeout=self._timeout_s, headers=headers
            )
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return None
            raise Unavailable(f"output chunk not stored: {exc!r}") from exc
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"output chunk not stored: {exc!r}") from exc
        # A duplicate: this offset was written by someone else (maybe with other text).
        return None if ack.duplicate else ack.seq
