"""The resync of open streams over NATS: every `SSE_RESYNC_S`, one request to the job-store's
`versions` endpoint (per 1,000 jobs) for the running jobs the hub's streams wait for; each job
stored at a newer version than this process saw is read as its owner and handed to the hub as
if announced (the streams skip what they already sent). Recovers a change announcement lost on
core NATS (a partition, a job-store replica stopped before announcing)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Final

from nats.aio.client import Client as NATS

from gateway.hub import Hub
from gateway.ports import GatewayObserver, JobStore
from gateway.resync import Missed, Seen, chunks, missed
from jobs_proto.api import (
    MAX_VERSIONS_PER_REQUEST,
    GetJob,
    GetJobVersions,
    JobChanged,
    JobVersions,
)
from jobs_proto.subjects import Subjects
from jobs_runtime.errors import Unavailable
from jobs_runtime.jobstore import JobStoreClient, Refused
from jobs_runtime.periodic import every

log = logging.getLogger(__name__)

# Missed jobs read from the job-store at once by one round.
_READS_AT_ONCE: Final = 32


class StreamResync:
    """The process's one resync task (`run` until `stop`); `round` is one pass, how many
    changes it recovered. `store` is the get path the streams read through (its replies also
    move the job views forward)."""

    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        hub: Hub,
        store: JobStore,
        observer: GatewayObserver,
        *,
        every_s: float,
        timeout_s: float = 2.0,
    ) -> None:
        self._client = JobStoreClient(nc, timeout_s=timeout_s)
        self._subject = subjects.job_versions
        self._hub = hub
        self._store = store
        self._observer = observer
        self._every_s = every_s

    async def run(self, stop: asyncio.Event) -> None:
        if self._every_s <= 0:
            return  # off (`SSE_RESYNC_S=0`)

        async def one_round() -> None:
            await self.round()

        await every(self._every_s, stop, "stream resync", one_round)

    async def round(self) -> int:
        asked = self._hub.watched_running()
        if not asked:
            return 0
        stored = await self._stored(asked)
        if stored is None:
            return 0
        found = missed(asked, stored)
        recovered = 0
        # A few reads at once: a partition can leave hundreds of jobs to read in one round.
        for start in range(0, len(found), _READS_AT_ONCE):
            batch = found[start : start + _READS_AT_ONCE]
            recovered += sum(await asyncio.gather(*(self._recover(m) for m in batch)))
        return recovered

    async def _stored(self, asked: dict[uuid.UUID, Seen]) -> dict[uuid.UUID, int] | None:
        """The stored versions of the jobs asked about; `None` when the job-store did not
        answer (the round is skipped: the next one asks again)."""
        stored: dict[uuid.UUID, int] = {}
        for chunk in chunks(list(asked), MAX_VERSIONS_PER_REQUEST):
            try:
                reply = await self._client.ask(
                    self._subject, GetJobVersions(job_ids=chunk), JobVersions
                )
            except Unavailable as exc:
                log.info("stream resync skipped: %s", exc, extra={"jobs": len(asked)})
                return None
            except Refused as exc:
                # A job-store older than this gateway (no `versions` yet), or a bug: nothing
                # a retry fixes soon, but nothing worse than without the resync either.
                log.warning("stream resync refused: %s", exc, extra={"jobs": len(asked)})
                return None
            stored.update(reply.versions)
        return stored

    async def _recover(self, miss: Missed) -> int:
        """Read the job as its owner and hand the hub its change: 1 when it did."""
        try:
            reply = await self._store.get_job(GetJob(job_id=miss.job_id, user_id=miss.user_id))
        except Unavailable as exc:
            log.info(
                "stream resync could not read a job: %s", exc, extra={"job_id": str(miss.job_id)}
            )
            return 0
        job = reply.job
        if job is None:
            return 0  # purged meanwhile
        now = self._hub.seen(miss.job_id)
        if now is None or now.version >= job.version:
            # Announced after all while asking (late, not lost), or its end was: no miss.
            return 0
        # Before the streams are handed it: one of them may end and its client reconnect.
        self._observer.missed_change()
        log.warning(
            "job change never announced here, recovered by the stream resync",
            extra={
                "job_id": str(job.job_id),
                "status": job.status,
                "seen_version": miss.seen,
                "version": job.version,
            },
        )
        self._hub.publish_change(
            JobChanged(user_id=miss.user_id, job=job, output_omitted=reply.output_omitted)
        )
        return 1
