"""The `Claims` port over a NATS KV bucket (`<JOBS_STREAM>_CLAIMS`): one key per job, whose
create and revision-checked update are JetStream's compare-and-set (the runtime's
`VersionedEntries`)."""

from __future__ import annotations

import uuid

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from ai_runner.ports import Claim, StoredClaim
from jobs_proto.stream import DAY_S, DEV_CAPACITY
from jobs_runtime.bus import ensure_key_value
from jobs_runtime.kv import VersionedEntries


def bucket_name(jobs_stream: str) -> str:
    """One bucket per jobs stream, so tests with their own stream get their own claims."""
    return f"{jobs_stream}_CLAIMS"


async def claims_bucket(
    js: JetStreamContext,
    jobs_stream: str,
    *,
    max_age_s: float = 30 * DAY_S,
    replicas: int = 1,
    max_bytes: int = DEV_CAPACITY.claims_bucket_max_bytes,
) -> KeyValue:
    """The claims bucket, created by the first runner that needs it.

    Claims outlive a job's events no longer than the `JOBS` stream keeps them: a `requested`
    replayed after its claim expired would find its own stream history gone as well.
    """
    # Direct gets: claims are written by compare-and-set and their facts only accumulate, so a
    # lagging replica's answer can make a write conflict (and read again), never win a race.
    return await ensure_key_value(
        js,
        bucket_name(jobs_stream),
        ttl_s=max_age_s,
        replicas=replicas,
        max_bytes=max_bytes,
        direct=True,
    )


class KvClaims:
    """Claims as JSON values keyed by job id; NATS not answering is `Unavailable`."""

    def __init__(self, kv: KeyValue) -> None:
        # No connection check: a handler would rather wait out a reconnect than fail at once.
        self._entries = VersionedEntries(kv, Claim, what="claims")

    async def read(self, job_id: uuid.UUID) -> StoredClaim | None:
        entry = await self._entries.read(str(job_id))
        return None if entry is None else StoredClaim(entry.value, entry.revision)

    async def create(self, job_id: uuid.UUID, claim: Claim) -> int | None:
        return await self._entries.create(str(job_id), claim)

    async def update(self, job_id: uuid.UUID, claim: Claim, revision: int) -> int | None:
        return await self._entries.update(str(job_id), claim, revision)
