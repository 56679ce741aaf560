"""The `IdempotencyKeys` port over a NATS KV bucket (`<JOBS_STREAM>_IDEMPOTENCY`), shared by
every gateway replica and surviving their restarts; entries expire 24 hours after their last
write. Creates and revision-checked updates are JetStream's compare-and-set."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from gateway.ports import IdempotencyRecord, StoredRecord
from jobs_proto.stream import DAY_S, DEV_CAPACITY
from jobs_runtime.bus import ensure_key_value
from jobs_runtime.kv import VersionedEntries


def bucket_name(jobs_stream: str) -> str:
    """One bucket per jobs stream, so tests with their own stream get their own keys."""
    return f"{jobs_stream}_IDEMPOTENCY"


async def idempotency_bucket(
    nc: NATS,
    jobs_stream: str,
    *,
    ttl_s: float = DAY_S,
    replicas: int = 1,
    max_bytes: int = DEV_CAPACITY.idempotency_bucket_max_bytes,
) -> KeyValue:
    """The bucket, created by the first gateway that starts (brought to `replicas` and
    `max_bytes` by every one)."""
    return await ensure_key_value(
        nc.jetstream(),
        bucket_name(jobs_stream),
        ttl_s=ttl_s,
        replicas=replicas,
        max_bytes=max_bytes,
    )


class KvIdempotencyKeys:
    """Records as JSON values keyed by slot (a hex digest, always a valid KV key), over the
    runtime's versioned entries; while NATS reconnects every call is `Unavailable` at once
    (a `503` now rather than a request buffered for later)."""

    def __init__(self, nc: NATS, kv: KeyValue) -> None:
        self._entries = VersionedEntries(kv, IdempotencyRecord, what="idempotency keys", nc=nc)

    async def read(self, slot: str) -> StoredRecord | None:
        entry = await self._entries.read(slot)
        return None if entry is None else StoredRecord(entry.value, entry.revision)

    async def create(self, slot: str, record: IdempotencyRecord) -> int | None:
        return await self._entries.create(slot, record)

    async def update(self, slot: str, record: IdempotencyRecord, revision: int) -> int | None:
        return await self._entries.update(slot, record, revision)
