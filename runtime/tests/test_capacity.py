"""Byte limits on a real JetStream: every stream, bucket and Object Store gets its `max_bytes`,
buckets made before without limits are brought to them, and a full `JOBS` refuses the next
event (the publisher's `Unavailable`, a `503` at the gateway) while the output log drops its
oldest chunk instead."""

import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js import api as js_api
from nats.js.errors import APIError

from gateway.adapters.nats import JetStreamEventBus
from jobs_proto.events import JobRequested
from jobs_proto.output import output_stream
from jobs_proto.stream import MIB, StreamSpec, jobs_stream, parked_stream
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, ensure_key_value, ensure_stream
from jobs_runtime.errors import Unavailable
from jobs_runtime.results import bucket_name, result_store
from jobs_runtime.setup import not_ready_yet


def _requested() -> JobRequested:
    return JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=datetime(2030, 1, 2, tzinfo=UTC),
        user_id="alice",
        job_type="title_generation",
        input={"topic": "tides"},
    )


async def test_every_stream_bucket_and_store_gets_its_max_bytes(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    name = jobs_stream_ready.name
    jobs = jobs_stream(subjects, name=name, max_age_s=3600, max_bytes=3 * MIB)
    await ensure_stream(js, jobs)  # the fixture's stream, brought to the new limit
    await ensure_stream(js, parked_stream(subjects, name, max_bytes=2 * MIB))
    await ensure_stream(js, output_stream(subjects, name, longest_deadline_s=60, max_bytes=5 * MIB))
    await ensure_key_value(js, f"{name}_CLAIMS", ttl_s=600, max_bytes=4 * MIB)
    await result_store(js, name, max_age_s=600, max_bytes=6 * MIB)

    async def config(stream: str) -> js_api.StreamConfig:
        return (await js.stream_info(stream)).config

    assert (await config(name)).max_bytes == 3 * MIB
    assert (await config(name)).discard == js_api.DiscardPolicy.NEW
    assert (await config(f"{name}_PARKED")).max_bytes == 2 * MIB
    assert (await config(f"{name}_PARKED")).discard == js_api.DiscardPolicy.NEW
    assert (await config(f"{name}_OUTPUT")).max_bytes == 5 * MIB
    assert (await config(f"{name}_OUTPUT")).discard == js_api.DiscardPolicy.OLD
    assert (await config(f"KV_{name}_CLAIMS")).max_bytes == 4 * MIB
    assert (await config(f"OBJ_{bucket_name(name)}")).max_bytes == 6 * MIB


async def test_a_bucket_and_a_store_made_without_limits_are_brought_to_them(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    name = jobs_stream_ready.name
    # As an earlier release made them: no byte limit, another age.
    await js.create_key_value(js_api.KeyValueConfig(bucket=f"{name}_CLAIMS", history=1, ttl=60))
    kv_before = await js.stream_info(f"KV_{name}_CLAIMS")
    await js.create_object_store(bucket_name(name), ttl=60)
    assert kv_before.config.max_bytes == -1

    kv = await ensure_key_value(js, f"{name}_CLAIMS", ttl_s=600, max_bytes=4 * MIB)
    await kv.put("job-1", b"kept")
    await result_store(js, name, max_age_s=600, max_bytes=6 * MIB)

    kv_after = (await js.stream_info(f"KV_{name}_CLAIMS")).config
    assert (kv_after.max_bytes, kv_after.max_age) == (4 * MIB, 600)
    # The rest of the bucket's configuration is its own, untouched.
    assert kv_after.max_msgs_per_subject == kv_before.config.max_msgs_per_subject
    assert kv_after.subjects == kv_before.config.subjects
    store_after = (await js.stream_info(f"OBJ_{bucket_name(name)}")).config
    assert (store_after.max_bytes, store_after.max_age) == (6 * MIB, 600)
    assert (await kv.get("job-1")).value == b"kept"
    # Asked again with the same limits: nothing to change.
    await ensure_key_value(js, f"{name}_CLAIMS", ttl_s=600, max_bytes=4 * MIB)


async def test_a_full_jobs_stream_refuses_the_next_event_and_keeps_the_old(
    nats_client: NATS, stream_spec: StreamSpec, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    # A tiny stream of this test's own: a few events fill it.
    tiny = jobs_stream(subjects, name=f"{stream_spec.name}_TINY", max_age_s=3600, max_bytes=4096)
    tiny = msgspec.structs.replace(tiny, max_msg_size=2048)
    await ensure_stream(js, tiny)
    bus = JetStreamEventBus(nats_client, EventPublisher(js, subjects))
    first = _requested()
    await bus.publish(first)
    try:
        for _ in range(100):  # 4 KiB holds a few events, never 100
            try:
                await bus.publish(_requested())
            except Unavailable as exc:
                refused = exc
                break
        else:
            pytest.fail("the stream took every event past its max_bytes")
        cause = refused.__cause__
        assert isinstance(cause, APIError), cause
        assert cause.description == "maximum bytes exceeded", cause
        info = await js.stream_info(tiny.name)
        assert info.state.first_seq == 1  # nothing old was dropped to make room
        kept = await js.get_msg(tiny.name, 1)
        assert kept.subject == subjects.event(first)
    finally:
        await js.delete_stream(tiny.name)


async def test_a_full_output_log_drops_its_oldest_chunk(
    nats_client: NATS, stream_spec: StreamSpec, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    spec = output_stream(
        subjects, f"{stream_spec.name}_TINY", longest_deadline_s=60, max_bytes=4096
    )
    spec = msgspec.structs.replace(spec, max_msg_size=2048)
    await ensure_stream(js, spec)
    subject = subjects.output(uuid.uuid4(), "p1")
    try:
        for _ in range(20):
            await js.publish(subject, b"x" * 1024, stream=spec.name)
        info = await js.stream_info(spec.name)
        assert info.state.first_seq > 1
        assert info.state.bytes <= 4096
    finally:
        await js.delete_stream(spec.name)


async def test_a_refusal_that_waiting_cannot_mend_is_not_taken_for_not_ready(
    nats_client: NATS, subjects: Subjects
) -> None:
    """The bound above is the server's: a stream asking more than it may reserve is refused
    with an error the start-up retry does not wait on (see `test_setup`)."""
    js = nats_client.jetstream()
    spec = jobs_stream(subjects, name=f"TOO_BIG_{uuid.uuid4().hex[:8]}", max_bytes=1 << 62)
    with pytest.raises(APIError) as refused:
        await ensure_stream(js, spec)
    assert refused.value.err_code == 10047, refused.value.description  # insufficient storage
    assert not not_ready_yet(refused.value)
