"""The `ResultStore` port over the `<JOBS_STREAM>_RESULTS` Object Store, as webhook-ingest uses
it: an output too large for one event is stored there and the event carries its reference."""

from __future__ import annotations

from nats.errors import Error as NatsError
from nats.js.object_store import ObjectStore

from jobs_proto.stream import output_fits_inline
from jobs_runtime.errors import Unavailable
from jobs_runtime.results import store_result


class ObjectStoreResults:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def aside(self, prediction_id: str, output: str) -> str | None:
        if output_fits_inline(output):
            return None
        try:
            return await store_result(self._store, prediction_id, output)
        except (NatsError, TimeoutError) as exc:
            raise Unavailable(f"could not store the large result: {exc!r}") from exc
