"""The claims bucket and the job history over a real NATS: compare-and-set lets exactly one of
racing runners claim a job, and a job's events name its prediction."""

import asyncio
import uuid
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from ai_runner.adapters.claims import KvClaims, bucket_name, claims_bucket
from ai_runner.adapters.history import StreamHistory
from ai_runner.ports import Claim
from jobs_proto.events import JobStarted, JobSubmitted
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher


async def test_of_racing_creates_exactly_one_wins_and_updates_need_the_revision(
    nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    js = nats_client.jetstream()
    # Every replica creates the bucket on start: the second call finds the first's.
    buckets = await asyncio.gather(*(claims_bucket(js, jobs_stream_ready.name) for _ in range(2)))
    info = await js.stream_info(f"KV_{bucket_name(jobs_stream_ready.name)}")
    assert info.config.max_msgs_per_subject == 1  # one claim per job, no history kept
    assert info.config.allow_direct  # a claim read is one request, not a JetStream API call
    claims = [KvClaims(b) for b in buckets]
    job_id = uuid.uuid4()
    assert await claims[0].read(job_id) is None

    revisions = await asyncio.gather(*(c.create(job_id, Claim()) for c in claims * 5))
    won = [r for r in revisions if r is not None]
    assert len(won) == 1

    stored = await claims[1].read(job_id)
    assert stored is not None
    assert stored.claim == Claim()
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


async def test_the_history_names_the_prediction_from_submitted_else_started(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    history = StreamHistory(js, jobs_stream_ready.name, subjects)
    publisher = EventPublisher(js, subjects)
    job_id, now = uuid.uuid4(), datetime.now(UTC)
    assert await history.prediction_of(job_id) is None

    await publisher.publish(JobStarted(job_id=job_id, occurred_at=now, prediction_id="p-start"))
    assert await history.prediction_of(job_id) == "p-start"
    await publisher.publish(JobSubmitted(job_id=job_id, occurred_at=now, prediction_id="p-sub"))
    assert await history.prediction_of(job_id) == "p-sub"
    assert await history.prediction_of(uuid.uuid4()) is None
