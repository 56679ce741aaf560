"""The `IdempotencyKeys` contract, run against the fake the unit tests use and against
`KvIdempotencyKeys` over a real NATS KV bucket: a free slot reads None, a create wins only on a
free slot, an update only at the revision read, and a store that does not answer is
`Unavailable`."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NATS

from gateway.adapters.idempotency import KvIdempotencyKeys, bucket_name, idempotency_bucket
from gateway.ports import IdempotencyKeys, IdempotencyRecord
from jobs_proto.stream import StreamSpec
from jobs_runtime.errors import Unavailable

from ..fakes import FakeIdempotencyKeys

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Keys:
    """Keys under test, and how to make them stop answering."""

    keys: IdempotencyKeys
    take_down: Callable[[], Awaitable[None]]


def record(state: str = "admitting") -> IdempotencyRecord:
    return IdempotencyRecord(
        fingerprint="f" * 64,
        job_id=uuid.UUID("6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10"),
        state=state,  # type: ignore[arg-type]
        since=AT,
    )


@pytest.fixture(params=["fake", "nats"])
async def subject(
    request: pytest.FixtureRequest, nats_url: str, jobs_stream_ready: StreamSpec
) -> AsyncIterator[Keys]:
    if request.param == "fake":
        fake = FakeIdempotencyKeys()

        async def take_down() -> None:
            fake.down = True

        yield Keys(fake, take_down)
        return
    # A connection of its own, so that taking it down leaves the test kit's alone.
    nc: NATS = await nats.connect(nats_url, max_reconnect_attempts=0)
    kv = await idempotency_bucket(nc, jobs_stream_ready.name)
    try:
        yield Keys(KvIdempotencyKeys(nc, kv), nc.close)
    finally:
        if not nc.is_closed:
            await nc.jetstream().delete_key_value(bucket_name(jobs_stream_ready.name))
            await nc.close()


async def test_a_free_slot_reads_none(subject: Keys) -> None:
    assert await subject.keys.read("a" * 64) is None


async def test_a_create_wins_only_on_a_free_slot(subject: Keys) -> None:
    keys = subject.keys
    revision = await keys.create("b" * 64, record())
    assert revision is not None
    assert await keys.read("b" * 64) == (record(), revision)
    assert await keys.create("b" * 64, record("admitted")) is None
    assert await keys.read("b" * 64) == (record(), revision)


async def test_an_update_wins_only_at_the_revision_read(subject: Keys) -> None:
    keys = subject.keys
    first = await keys.create("c" * 64, record())
    assert first is not None
    second = await keys.update("c" * 64, record("failed"), first)
    assert second is not None
    assert second > first
    assert await keys.read("c" * 64) == (record("failed"), second)
    assert await keys.update("c" * 64, record("admitted"), first) is None
    assert await keys.read("c" * 64) == (record("failed"), second)


async def test_an_update_of_a_free_slot_stores_nothing(subject: Keys) -> None:
    assert await subject.keys.update("d" * 64, record(), 1) is None
    assert await subject.keys.read("d" * 64) is None


async def test_keys_that_do_not_answer_are_unavailable(subject: Keys) -> None:
    await subject.take_down()
    with pytest.raises(Unavailable):
        await subject.keys.read("e" * 64)
    with pytest.raises(Unavailable):
        await subject.keys.create("e" * 64, record())
    with pytest.raises(Unavailable):
        await subject.keys.update("e" * 64, record(), 1)
