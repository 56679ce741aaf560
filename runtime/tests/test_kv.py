"""Versioned entries against a real NATS KV bucket: compare-and-set races, deleted keys, and
`Unavailable` when NATS is away or a value does not decode."""

import msgspec
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.stream import MIB, StreamSpec
from jobs_runtime.bus import ensure_key_value
from jobs_runtime.errors import Unavailable
from jobs_runtime.kv import Versioned, VersionedEntries


class Record(msgspec.Struct, frozen=True):
    owner: str
    attempts: int = 0


@pytest.mark.parametrize("direct", [False, True])
async def test_create_and_update_are_compare_and_set(
    nats_client: NATS, jobs_stream_ready: StreamSpec, direct: bool
) -> None:
    js = nats_client.jetstream()
    name = f"{jobs_stream_ready.name}_KV_{int(direct)}"
    kv = await ensure_key_value(js, name, ttl_s=600, max_bytes=MIB, direct=direct)
    entries = VersionedEntries(kv, Record, what="records")
    assert await entries.read("job-1") is None
    first = await entries.create("job-1", Record("runner-a"))
    assert first is not None
    assert await entries.create("job-1", Record("runner-b")) is None  # the other runner lost
    assert await entries.read("job-1") == Versioned(Record("runner-a"), first)

    second = await entries.update("job-1", Record("runner-a", 1), first)
    assert second is not None
    assert second > first
    assert await entries.update("job-1", Record("runner-b", 1), first) is None  # stale revision
    assert await entries.read("job-1") == Versioned(Record("runner-a", 1), second)
    await js.delete_key_value(name)


async def test_a_deleted_key_reads_as_absent_and_can_be_created_again(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    name = f"{jobs_stream_ready.name}_KV_DELETED"
    kv = await ensure_key_value(js, name, ttl_s=600, max_bytes=MIB)
    entries = VersionedEntries(kv, Record, what="records")
    assert await entries.create("slot", Record("a")) is not None
    await kv.delete("slot")
    assert await entries.read("slot") is None
    assert await entries.create("slot", Record("b")) is not None
    read = await entries.read("slot")
    assert read is not None
    assert read.value == Record("b")
    await js.delete_key_value(name)


async def test_an_undecodable_value_is_unavailable_not_a_crash(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    name = f"{jobs_stream_ready.name}_KV_GARBAGE"
    kv = await ensure_key_value(js, name, ttl_s=600, max_bytes=MIB)
    await kv.put("slot", b"\xff not json")
    with pytest.raises(Unavailable, match="records entry slot unreadable"):
        await VersionedEntries(kv, Record, what="records").read("slot")
    await js.delete_key_value(name)


async def test_a_closed_connection_is_unavailable_at_once(
    nats_url: str, jobs_stream_ready: StreamSpec
) -> None:
    nc = NATS()
    await nc.connect(nats_url)
    name = f"{jobs_stream_ready.name}_KV_CLOSED"
    kv = await ensure_key_value(nc.jetstream(), name, ttl_s=600, max_bytes=MIB)
    entries = VersionedEntries(kv, Record, what="records", nc=nc)
    await nc.jetstream().delete_key_value(name)
    await nc.close()
    for attempt in (entries.read("slot"), entries.create("slot", Record("a"))):
        with pytest.raises(Unavailable, match="not connected"):
            await attempt
