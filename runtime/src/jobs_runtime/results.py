"""Results too large for one bus message, kept in a JetStream Object Store and named by reference.

webhook-ingest and the ai-runner store a final output that does not fit in its event
(`jobs_proto.stream.output_fits_inline`) here and publishes
`JobCompleted.output_ref`; the job-store loads it back when it applies the event. The bucket's
age limit should be at least the `JOBS` stream's, so a replayed event still finds its result.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.object_store import ObjectStore

from jobs_proto.stream import DAY_S, DEV_CAPACITY
from jobs_runtime.bus import reconcile_store


def bucket_name(jobs_stream: str) -> str:
    """One bucket per jobs stream, so tests with their own stream get their own bucket."""
    return f"{jobs_stream}_RESULTS"


async def result_store(
    js: JetStreamContext,
    jobs_stream: str,
    *,
    max_age_s: float = 30 * DAY_S,
    replicas: int = 1,
    max_bytes: int = DEV_CAPACITY.results_store_max_bytes,
    reconcile: bool = True,
) -> ObjectStore:
    """The results bucket, created on first use by whichever service needs it first. Its
    writers (`reconcile`) bring one that exists to `replicas`, `max_bytes` and `max_age_s`, as
    `ensure_stream` does a stream; its reader, the job-store, may not change it."""
    name = bucket_name(jobs_stream)
    try:
        store = await js.object_store(name)
    except BucketNotFoundError:
        return await js.create_object_store(
            name, ttl=max_age_s, replicas=replicas, max_bytes=max_bytes
        )
    if reconcile:
        await reconcile_store(
            js, f"OBJ_{name}", replicas=replicas, max_bytes=max_bytes, max_age_s=max_age_s
        )
    return store


def result_ref(prediction_id: str) -> str:
    """The object name of a prediction's output: one per prediction, so a retried webhook
    overwrites the same object instead of adding another."""
    return f"output/{prediction_id}"


async def store_result(store: ObjectStore, prediction_id: str, output: str) -> str:
    ref = result_ref(prediction_id)
    await store.put(ref, output.encode())
    return ref


async def load_result(store: ObjectStore, ref: str) -> str:
    """The output a reference names; raises `nats.js.errors.ObjectNotFoundError` if gone."""
    result = await store.get(ref)
    assert result.data is not None
    return result.data.decode()
