"""Partial output on core NATS: `JobProgress` published on `job_progress.<jobId>`, fire and
forget (no reply waited for); the ai-runner's relay (streaming models) and webhook-ingest
(`output` webhooks of the others) send it, the gateway's `/events` pushes it."""

from __future__ import annotations

from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from jobs_proto.api import JobProgress
from jobs_proto.subjects import Subjects
from jobs_runtime.errors import Unavailable

_ERRORS: Final = (NatsError, OSError, TimeoutError)
_encode = msgspec.json.Encoder().encode


class CoreNatsProgress:
    """Publishes progress; raises `Unavailable` when NATS cannot take it now (stale by the time
    it is back: the next progress carries all the text again)."""

    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects

    async def send(self, progress: JobProgress) -> None:
        if not self._nc.is_connected:
            raise Unavailable("not connected to NATS")
        try:
            await self._nc.publish(self._subjects.progress(progress.job_id), _encode(progress))
        except _ERRORS as exc:
            raise Unavailable(f"progress not sent: {exc!r}") from exc
