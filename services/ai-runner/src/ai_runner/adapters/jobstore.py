"""The `StuckJobFinder` port over the runtime's job-store client (its `stuck` endpoint)."""

from __future__ import annotations

from nats.aio.client import Client as NATS

from jobs_proto.api import FindStuckJobs, StuckJobs
from jobs_proto.subjects import Subjects
from jobs_runtime.errors import Unavailable
from jobs_runtime.jobstore import JobStoreClient, Refused


class NatsStuckJobFinder:
    """Any refusal is `Unavailable` too: the reconciler only skips a round and asks again."""

    def __init__(self, nc: NATS, subjects: Subjects, timeout_s: float = 5.0) -> None:
        self._client = JobStoreClient(nc, timeout_s=timeout_s)
        self._subject = subjects.stuck_jobs

    async def stuck(self, older_than_s: float, limit: int) -> StuckJobs:
        request = FindStuckJobs(older_than_s=older_than_s, limit=limit)
        try:
            return await self._client.ask(self._subject, request, StuckJobs)
        except Refused as exc:
            raise Unavailable(str(exc)) from exc
