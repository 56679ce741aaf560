"""The `StuckJobFinder` port over NATS request/reply to the job-store's `stuck` endpoint."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from ai_runner.ports import TransientFailure
from jobs_proto.api import FindStuckJobs, StuckJobs
from jobs_proto.subjects import Subjects

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StuckJobs)
_ERROR_CODE = "Nats-Service-Error-Code"
_ERROR = "Nats-Service-Error"


class NatsStuckJobFinder:
    def __init__(self, nc: NATS, subjects: Subjects, timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._subject = subjects.stuck_jobs
        self._timeout_s = timeout_s

    async def stuck(self, older_than_s: float, limit: int) -> StuckJobs:
        body = _encoder.encode(FindStuckJobs(older_than_s=older_than_s, limit=limit))
        try:
            reply = await self._nc.request(self._subject, body, timeout=self._timeout_s)
        except (NatsError, TimeoutError) as exc:
            raise TransientFailure(f"the job-store did not answer: {exc!r}") from exc
        headers = reply.headers or {}
        if _ERROR_CODE in headers:
            raise TransientFailure(
                f"the job-store answered {headers[_ERROR_CODE]}: {headers.get(_ERROR, '')}"
            )
        try:
            return _decoder.decode(reply.data)
        except msgspec.DecodeError as exc:
            raise TransientFailure(f"the job-store's answer is not StuckJobs: {exc}") from exc
