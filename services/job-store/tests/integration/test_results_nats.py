"""Outputs too large for an event: loaded from a real NATS Object Store when the completion is
applied; a missing object is retried, then fails the job `result_expired`."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from nats.aio.client import Client as NATS

from job_store.adapters.nats import NatsChangeAnnouncer, NatsResultLoader
from job_store.adapters.postgres import PostgresJobStore
from job_store.applier import EventApplier
from job_store.batches import ResultMissing, apply_event
from jobs_proto.events import JobCompleted
from jobs_proto.stream import EVENT_OVERHEAD_BYTES, StreamSpec
from jobs_runtime.results import result_store, store_result
from jobs_testkit.events import completed, requested, submitted


def _by_reference(job: uuid.UUID, ref: str) -> JobCompleted:
    return msgspec.structs.replace(completed(job), output=None, output_ref=ref)


async def test_a_stored_output_becomes_the_jobs_output(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    store: PostgresJobStore,
    announcer: NatsChangeAnnouncer,
) -> None:
    js = nats_client.jetstream()
    # Bigger than one event may carry: what webhook-ingest stores aside.
    output = "Tides. " * ((8 * 1024 * 1024 - EVENT_OVERHEAD_BYTES) // 7 + 1024)
    ref = await store_result(await result_store(js, jobs_stream_ready.name), "pred-1", output)
    results = NatsResultLoader(js, jobs_stream_ready.name)
    job = uuid.uuid4()
    await apply_event(requested(job), store, announcer, results)
    await apply_event(submitted(job), store, announcer, results)
    row = await apply_event(_by_reference(job, ref), store, announcer, results)
    assert row is not None
    assert row.status == "succeeded"
    assert row.output == output
    stored = await store.get(job)
    assert stored is not None
    assert stored.output == output
    history = await store.history(job)
    assert history[-1].summary["outputRef"] == ref


async def test_a_missing_object_is_retried_then_the_job_fails_result_expired(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    store: PostgresJobStore,
    announcer: NatsChangeAnnouncer,
) -> None:
    js = nats_client.jetstream()
    await result_store(js, jobs_stream_ready.name)  # the bucket exists, the object does not
    applier = EventApplier(
        store, announcer, NatsResultLoader(js, jobs_stream_ready.name), result_misses=2
    )
    job = uuid.uuid4()
    await applier(requested(job))
    late = _by_reference(job, "output/never-stored")
    for _ in range(2):
        with pytest.raises(ResultMissing):
            await applier(late)
        row = await store.get(job)
        assert row is not None
        assert row.status == "pending"
    await applier(late)
    row = await store.get(job)
    assert row is not None
    assert (row.status, row.error_code, row.output) == ("failed", "result_expired", None)
    # A redelivery after the verdict changes nothing and never asks the bucket again.
    await applier(late)
    assert [e.kind for e in await store.history(job)] == ["requested", "completed"]


async def test_an_object_that_arrives_between_tries_is_used(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    store: PostgresJobStore,
    announcer: NatsChangeAnnouncer,
) -> None:
    js = nats_client.jetstream()
    applier = EventApplier(store, announcer, NatsResultLoader(js, jobs_stream_ready.name))
    job = uuid.uuid4()
    await applier(requested(job))
    event = _by_reference(job, f"output/pred-{job}")
    with pytest.raises(ResultMissing):
        await applier(event)
    await store_result(await result_store(js, jobs_stream_ready.name), f"pred-{job}", "Late.")
    await applier(event)
    row = await store.get(job)
    assert row is not None
    assert (row.status, row.output) == ("succeeded", "Late.")
