"""Versioned entries over a NATS KV bucket: read with the revision, create and update by
JetStream's compare-and-set. The one way every service keeps shared records (the gateway's
idempotency keys, the ai-runner's claims)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from jobs_runtime.errors import Unavailable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A record as read, with the revision an update must name."""

    value: T
    revision: int


class VersionedEntries(Generic[T]):
    """Records of one msgspec type as JSON values. A key never written, deleted or purged reads
    as None (nats-py reports a deleted key as not found); `create` and `update` answer None when
    another writer won the race, the new revision otherwise. Any way NATS fails to answer, and a
    value that does not decode, is `Unavailable`."""

    def __init__(
        self, kv: KeyValue, value_type: type[T], *, what: str, nc: NATS | None = None
    ) -> None:
        self._kv = kv
        self._what = what  # in error messages: "idempotency keys", "claims"
        self._nc = nc
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(value_type)

    def _require_connected(self) -> None:
        # While reconnecting nats-py buffers a request until it times out much later: a caller
        # answering a client would rather say `503` at once.
        if self._nc is not None and not self._nc.is_connected:
            raise Unavailable("not connected to NATS")

    async def read(self, key: str) -> Versioned[T] | None:
        self._require_connected()
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"{self._what} not readable: {exc!r}") from exc
        if entry.value is None or entry.revision is None:
            return None
        try:
            return Versioned(self._decoder.decode(entry.value), entry.revision)
        except msgspec.DecodeError as exc:
            raise Unavailable(f"{self._what} entry {key} unreadable: {exc}") from exc

    async def create(self, key: str, value: T) -> int | None:
        self._require_connected()
        try:
            return await self._kv.create(key, self._encoder.encode(value))
        except KeyWrongLastSequenceError:
            return None
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"{self._what} entry {key} not stored: {exc!r}") from exc

    async def update(self, key: str, value: T, revision: int) -> int | None:
        self._require_connected()
        try:
            return await self._kv.update(key, self._encoder.encode(value), last=revision)
        except KeyWrongLastSequenceError:
            return None
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"{self._what} entry {key} not stored: {exc!r}") from exc
