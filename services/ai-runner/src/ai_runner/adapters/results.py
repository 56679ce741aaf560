"""The `ResultStore` port over the `<JOBS_STREAM>_RESULTS` Object Store, as webhook-ingest uses
it: an output too large for one event is stored there and the event carries its reference."""

from __future__ import annotations

from typing import Final

import msgspec
from nats.errors import Error as NatsError
from nats.js.object_store import ObjectStore

from ai_runner.ports import TransientFailure
from jobs_proto.stream import MAX_MESSAGE_BYTES
from jobs_runtime.results import EVENT_OVERHEAD_BYTES, store_result

MAX_INLINE_OUTPUT_BYTES: Final = MAX_MESSAGE_BYTES - EVENT_OVERHEAD_BYTES


class ObjectStoreResults:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def aside(self, prediction_id: str, output: str) -> str | None:
        # Measured as JSON text: quotes and control characters grow when escaped.
        if len(msgspec.json.encode(output)) <= MAX_INLINE_OUTPUT_BYTES:
            return None
        try:
            return await store_result(self._store, prediction_id, output)
        except (NatsError, TimeoutError) as exc:
            raise TransientFailure(f"could not store the large result: {exc!r}") from exc
