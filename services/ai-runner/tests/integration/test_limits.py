"""The shared limits bucket over a real NATS: replicas racing for the last slots of a window, or
for in-flight slots, never take more than the limit between them."""

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NoKeysError
from nats.js.kv import KeyValue
from prometheus_client import REGISTRY

from ai_runner.adapters.limits import KvLimits, limits_bucket
from ai_runner.adapters.metrics import PrometheusObserver
from jobs_proto.stream import StreamSpec


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_racing_replicas_take_no_more_creations_than_the_window_allows(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    buckets = await asyncio.gather(*(limits_bucket(js, jobs_stream_ready.name) for _ in range(3)))
    clock = Clock()
    replicas = [
        KvLimits(b, creations_per_window=4, window_s=60, max_in_flight=0, clock=clock)
        for b in buckets
    ]
    answers = await asyncio.gather(
        *(replicas[n % 3].admit(uuid.uuid4(), hold_s=100) for n in range(12))
    )
    assert sum(answer is None for answer in answers) == 4
    waits = [answer for answer in answers if answer is not None]
    assert {w.limit for w in waits} == {"creations"}
    # The window frees when its oldest create leaves it (plus the guard), not before.
    assert all(59 < w.wait_s <= 61 for w in waits)
    assert (await replicas[0].capacity()).free == 0
    clock.now += 61
    assert (await replicas[1].capacity()).free == 4


async def test_zero_for_both_limits_admits_everything_and_writes_nothing(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    bucket = await limits_bucket(nats_client.jetstream(), jobs_stream_ready.name)
    limits = KvLimits(bucket, creations_per_window=0, window_s=60, max_in_flight=0)
    answers = [await limits.admit(uuid.uuid4(), hold_s=100) for _ in range(50)]
    assert answers == [None] * 50
    capacity = await limits.capacity()
    assert capacity.free >= 50
    assert capacity.wait is None
    with pytest.raises(NoKeysError):
        await bucket.keys()


async def test_in_flight_slots_are_held_per_job_released_and_expire(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    clock = Clock()
    bucket = await limits_bucket(js, jobs_stream_ready.name)
    limits = KvLimits(
        bucket,
        creations_per_window=100,
        window_s=60,
        max_in_flight=2,
        clock=clock,
        observer=PrometheusObserver(),
    )
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await limits.admit(first, hold_s=30, job_type="outline") is None
    assert await limits.admit(second, hold_s=300, job_type="titles") is None
    full = await limits.admit(third, hold_s=30, job_type="outline")
    assert full is not None
    assert full.limit == "in_flight"
    # The same job again (a retried create) holds no second slot.
    assert await limits.admit(first, hold_s=30) is None
    await limits.release(first)
    assert await limits.admit(third, hold_s=30, job_type="outline") is None
    assert (await limits.capacity()).free == 0
    for job_type in ("outline", "titles"):
        labels = {"job_type": job_type}
        assert REGISTRY.get_sample_value("ai_runner_predictions_in_flight", labels) == 1
    # A slot whose release was lost frees itself when its hold runs out.
    clock.now += 31
    assert (await limits.capacity()).free == 1


class CountingBucket:
    """The real bucket, counting its reads."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.gets = 0

    async def get(self, key: str) -> KeyValue.Entry:
        self.gets += 1
        return await self._kv.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)


async def test_a_replica_writes_from_what_it_last_wrote_and_decides_full_only_on_a_fresh_read(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    mine = CountingBucket(await limits_bucket(js, jobs_stream_ready.name))
    other = await limits_bucket(js, jobs_stream_ready.name)
    clock = Clock()
    a = KvLimits(
        cast(KeyValue, mine), creations_per_window=0, window_s=60, max_in_flight=2, clock=clock
    )
    b = KvLimits(other, creations_per_window=0, window_s=60, max_in_flight=2, clock=clock)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert await a.admit(first, hold_s=30) is None
    reads = mine.gets
    assert await a.admit(second, hold_s=30) is None
    # Alone on the key: written from what it wrote last, without a read.
    assert mine.gets == reads
    # Another replica frees a slot: what `a` remembers says full, so it reads before deciding.
    await b.release(first)
    assert await a.admit(third, hold_s=30) is None
    assert mine.gets == reads + 1
    # And a write that conflicts with the other replica's is read again and decided anew.
    assert await b.admit(uuid.uuid4(), hold_s=30) is not None
    await b.release(second)
    assert await a.admit(uuid.uuid4(), hold_s=30) is None
    assert (await b.capacity()).free == 0


async def test_one_replicas_concurrent_admits_do_not_conflict_with_each_other(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    bucket = CountingBucket(await limits_bucket(nats_client.jetstream(), jobs_stream_ready.name))
    limits = KvLimits(
        cast(KeyValue, bucket), creations_per_window=100, window_s=60, max_in_flight=100
    )
    jobs = [uuid.uuid4() for _ in range(20)]
    answers = await asyncio.gather(*(limits.admit(job, hold_s=30) for job in jobs))
    assert answers == [None] * 20
    # One read of each key to start from, then every write from the one before it.
    assert bucket.gets == 2
    await asyncio.gather(*(limits.release(job) for job in jobs))
    assert bucket.gets == 2
    assert (await limits.capacity()).free == 80
