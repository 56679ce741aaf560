"""The `Claims` port over a NATS KV bucket (`<JOBS_STREAM>_CLAIMS`): one key per job, whose
create and revision-checked update are JetStream's compare-and-set."""

from __future__ import annotations

import uuid

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ai_runner.ports import Claim, StoredClaim
from jobs_proto.stream import DAY_S
from jobs_runtime.bus import ensure_key_value

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Claim)


def bucket_name(jobs_stream: str) -> str:
    """One bucket per jobs stream, so tests with their own stream get their own claims."""
    return f"{jobs_stream}_CLAIMS"


async def claims_bucket(
    js: JetStreamContext, jobs_stream: str, *, max_age_s: float = 30 * DAY_S, replicas: int = 1
) -> KeyValue:
    """The claims bucket, created by the first runner that needs it.

    Claims outlive a job's events no longer than the `JOBS` stream keeps them: a `requested`
    replayed after its claim expired would find its own stream history gone as well.
    """
    # Direct gets: claims are written by compare-and-set and their facts only accumulate, so a
    # lagging replica's answer can make a write conflict (and read again), never win a race.
    return await ensure_key_value(
        js, bucket_name(jobs_stream), ttl_s=max_age_s, replicas=replicas, direct=True
    )


class KvClaims:
    """Claims as JSON values keyed by job id."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def read(self, job_id: uuid.UUID) -> StoredClaim | None:
        try:
            entry = await self._kv.get(str(job_id))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return StoredClaim(_decoder.decode(entry.value), entry.revision)

    async def create(self, job_id: uuid.UUID, claim: Claim) -> int | None:
        try:
            return await self._kv.create(str(job_id), _encoder.encode(claim))
        except KeyWrongLastSequenceError:
            return None

    async def update(self, job_id: uuid.UUID, claim: Claim, revision: int) -> int | None:
        try:
            return await self._kv.update(str(job_id), _encoder.encode(claim), last=revision)
        except KeyWrongLastSequenceError:
            return None
