"""The `JobHistory` port over the `JOBS` stream: the last event of a kind for a job, read with
JetStream's direct get-last-by-subject, so a runner can find a prediction it created but lost."""

from __future__ import annotations

import uuid
from typing import Final

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from jobs_proto.events import JobCompleted, JobStarted, JobSubmitted, decode_event
from jobs_proto.subjects import Subjects

# Submitted first: it is the runners' own record. Started comes from the `start` webhook, which
# carries `?job=`; completed covers a prediction that finished before anyone looked.
_KINDS: Final = ("submitted", "started", "completed")


class StreamHistory:
    def __init__(self, js: JetStreamContext, stream: str, subjects: Subjects) -> None:
        self._js = js
        self._stream = stream
        self._subjects = subjects

    async def prediction_of(self, job_id: uuid.UUID) -> str | None:
        for kind in _KINDS:
            subject = self._subjects.job_event(kind, job_id)
            try:
                msg = await self._js.get_last_msg(self._stream, subject)
            except NotFoundError:
                continue
            if msg.data is None:
                continue
            event = decode_event(msg.data)
            if isinstance(event, JobSubmitted | JobStarted | JobCompleted):
                return event.prediction_id
        return None
