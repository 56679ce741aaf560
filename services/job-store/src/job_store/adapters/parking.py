"""Dead-letter parking: a message the job-store can never apply is copied to the
`<JOBS_STREAM>_PARKED` stream with its reason in headers, counted, and settled, so it never
blocks the consumer and an operator can still read (and republish) it.
"""

from __future__ import annotations

import logging
from typing import Final

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from job_store.ports import JobStoreObserver, NoObserver
from jobs_proto.events import AnyJobEvent, encode_event
from jobs_proto.stream import (
    DEV_CAPACITY,
    PARK_DETAIL_HEADER,
    PARK_REASON_HEADER,
    PARK_SUBJECT_HEADER,
    parked_stream,
)
from jobs_proto.subjects import Subjects, message_id
from jobs_runtime.bus import ensure_stream

log = logging.getLogger(__name__)

# Why a message is parked; the `reason` label of `job_store_parked_total`.
NO_SUCH_JOB: Final = "no_such_job"


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


class NatsParking:
    """Publishes parked messages; `ensure` creates the stream (idempotent, every replica)."""

    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        jobs_stream: str,
        *,
        replicas: int = 1,
        max_bytes: int = DEV_CAPACITY.parked_stream_max_bytes,
        observer: JobStoreObserver | None = None,
    ) -> None:
        self._js = js
        self._observer = observer or NoObserver()
        self._subjects = subjects
        self._spec = parked_stream(subjects, jobs_stream, replicas=replicas, max_bytes=max_bytes)

    @property
    def stream(self) -> str:
        return self._spec.name

    async def ensure(self) -> None:
        await ensure_stream(self._js, self._spec)

    async def park_message(self, msg: Msg, reason: str, detail: str) -> None:
        """Park a message as it came off the stream (body untouched)."""
        sequence = msg.metadata.sequence.stream
        await self._publish(
            msg.data, reason, detail, msg.subject, f"parked:{msg.metadata.stream}:{sequence}"
        )

    async def park(self, event: AnyJobEvent, reason: str, detail: str) -> None:
        """The `Parking` port: park an event the applier decoded but cannot apply."""
        await self._publish(
            encode_event(event),
            reason,
            detail,
            self._subjects.event(event),
            f"parked:{message_id(event)}",
        )

    async def _publish(
        self, payload: bytes, reason: str, detail: str, subject: str, msg_id: str
    ) -> None:
        headers = {
            PARK_REASON_HEADER: reason,
            PARK_DETAIL_HEADER: _one_line(detail),
            PARK_SUBJECT_HEADER: subject,
            "Nats-Msg-Id": msg_id,
        }
        await self._js.publish(
            self._subjects.parked(reason),
            payload,
            headers=headers,
            stream=self._spec.name,
        )
        self._observer.parked(reason)
        log.warning(
            "message parked",
            extra={"reason": reason, "detail": _one_line(detail), "original_subject": subject},
        )
