"""The `IdempotencyKeys` port over a NATS KV bucket (`<JOBS_STREAM>_IDEMPOTENCY`), shared by
every gateway replica and surviving their restarts; entries expire 24 hours after their last
write. Creates and revision-checked updates are JetStream's compare-and-set."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from gateway.ports import IdempotencyRecord, StoredRecord, Unavailable
from jobs_proto.stream import DAY_S
from jobs_runtime.bus import ensure_key_value

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(IdempotencyRecord)


def bucket_name(jobs_stream: str) -> str:
    """One bucket per jobs stream, so tests with their own stream get their own keys."""
    return f"{jobs_stream}_IDEMPOTENCY"


async def idempotency_bucket(
    nc: NATS, jobs_stream: str, *, ttl_s: float = DAY_S, replicas: int = 1
) -> KeyValue:
    """The bucket, created by the first gateway that starts."""
    return await ensure_key_value(
        nc.jetstream(), bucket_name(jobs_stream), ttl_s=ttl_s, replicas=replicas
    )


class KvIdempotencyKeys:
    """Records as JSON values keyed by slot (a hex digest, always a valid KV key)."""

    def __init__(self, nc: NATS, kv: KeyValue) -> None:
        self._nc = nc
        self._kv = kv

    def _require_connected(self) -> None:
        # As for publishes: answer `503` at once rather than a request buffered for later.
        if not self._nc.is_connected:
            raise Unavailable("not connected to NATS")

    async def get(self, slot: str) -> StoredRecord | None:
        self._require_connected()
        try:
            entry = await self._kv.get(slot)
        except (KeyNotFoundError, KeyDeletedError):
            return None
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"idempotency keys not readable: {exc!r}") from exc
        if entry.value is None or entry.revision is None:
            return None
        try:
            return StoredRecord(_decoder.decode(entry.value), entry.revision)
        except msgspec.DecodeError as exc:
            raise Unavailable(f"idempotency record {slot} unreadable: {exc}") from exc

    async def create(self, slot: str, record: IdempotencyRecord) -> int | None:
        self._require_connected()
        try:
            return await self._kv.create(slot, _encoder.encode(record))
        except KeyWrongLastSequenceError:
            return None
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"idempotency key not stored: {exc!r}") from exc

    async def update(self, slot: str, record: IdempotencyRecord, revision: int) -> int | None:
        self._require_connected()
        try:
            return await self._kv.update(slot, _encoder.encode(record), last=revision)
        except KeyWrongLastSequenceError:
            return None
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"idempotency key not stored: {exc!r}") from exc
