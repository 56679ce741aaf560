"""The `Claims` contract, run against the fake the unit tests use and against `KvClaims` on a
real NATS KV bucket: of racing runners exactly one claims a job, an update needs the revision it
read, and a claim reads back as it was written."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from ai_runner.adapters.claims import KvClaims, bucket_name, claims_bucket
from ai_runner.ports import Claim, Claims
from jobs_proto.events import JobError
from jobs_proto.stream import StreamSpec

from ..fakes import FakeClaims

# Several runners' handles on one store: each replica opens the bucket for itself.
Replicas = Callable[[int], Awaitable[list[Claims]]]


@pytest.fixture(params=["fake", "kv"])
def replicas(request: pytest.FixtureRequest) -> Replicas:
    if request.param == "fake":
        shared = FakeClaims()

        async def fakes(count: int) -> list[Claims]:
            return [shared] * count

        return fakes
    nats_client: NATS = request.getfixturevalue("nats_client")
    stream: StreamSpec = request.getfixturevalue("jobs_stream_ready")
    js = nats_client.jetstream()

    async def buckets(count: int) -> list[Claims]:
        # Every replica creates the bucket on start: the later calls find the first's.
        opened = await asyncio.gather(*(claims_bucket(js, stream.name) for _ in range(count)))
        return [KvClaims(bucket) for bucket in opened]

    return buckets


async def test_a_job_no_runner_claimed_reads_as_none(replicas: Replicas) -> None:
    (claims,) = await replicas(1)
    assert await claims.read(uuid.uuid4()) is None


async def test_of_racing_creates_exactly_one_wins_and_updates_need_the_revision(
    replicas: Replicas,
) -> None:
    claims = await replicas(2)
    job_id = uuid.uuid4()
    revisions = await asyncio.gather(*(c.create(job_id, Claim()) for c in claims * 5))
    won = [r for r in revisions if r is not None]
    assert len(won) == 1

    stored = await claims[1].read(job_id)
    assert stored is not None
    assert stored.claim == Claim()
    assert stored.revision == won[0]
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    taken = Claim(creating_since=since, attempts=2)
    updated = await claims[0].update(job_id, taken, stored.revision)
    assert updated is not None
    # A runner that read before that update loses, and must read again.
    assert await claims[1].update(job_id, Claim(canceled=True), stored.revision) is None
    again = await claims[1].read(job_id)
    assert again is not None
    assert again.claim == taken
    assert again.revision == updated


async def test_an_update_of_a_job_never_claimed_changes_nothing(replicas: Replicas) -> None:
    (claims,) = await replicas(1)
    job_id = uuid.uuid4()
    assert await claims.update(job_id, Claim(canceled=True), 1) is None
    assert await claims.read(job_id) is None


async def test_every_fact_of_a_claim_reads_back_as_written(replicas: Replicas) -> None:
    (claims,) = await replicas(1)
    job_id = uuid.uuid4()
    claim = Claim(
        prediction_id="p-1",
        creating_since=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        attempts=3,
        last_error="HTTP 500",
        canceled=True,
        failed=JobError(code="attempts_exhausted", message="3 attempts failed"),
        job_type="script_generation",
    )
    assert await claims.create(job_id, claim) is not None
    stored = await claims.read(job_id)
    assert stored is not None
    assert stored.claim == claim


async def test_the_bucket_keeps_one_claim_per_job_and_reads_directly(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    await claims_bucket(js, jobs_stream_ready.name)
    info = await js.stream_info(f"KV_{bucket_name(jobs_stream_ready.name)}")
    assert info.config.max_msgs_per_subject == 1  # one claim per job, no history kept
    assert info.config.allow_direct  # a claim read is one request, not a JetStream API call
