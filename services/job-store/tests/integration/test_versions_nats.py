"""The `versions` endpoint over real NATS request/reply against real Postgres: the committed
version of each named job, straight from the database (a write no replica of this process made
is seen), unknown jobs left out, too many ids refused `422`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client as NATS

from job_store.adapters.database import Pool
from job_store.adapters.nats import JobStoreEndpoints
from job_store.adapters.postgres import PostgresJobStore
from job_store.batches import apply_events
from jobs_proto.api import MAX_VERSIONS_PER_REQUEST, GetJobVersions, JobVersions
from jobs_proto.subjects import Subjects
from jobs_testkit.events import requested, started, submitted

_encoder = msgspec.json.Encoder()


@pytest.fixture
def cached_store(pool: Pool) -> PostgresJobStore:
    # With its row cache, as the service runs: the endpoint must not answer from it.
    return PostgresJobStore(pool, cached_rows=1000)


@pytest.fixture
async def endpoints(
    nats_client: NATS, subjects: Subjects, cached_store: PostgresJobStore
) -> AsyncIterator[JobStoreEndpoints]:
    served = JobStoreEndpoints(nats_client, subjects, cached_store)
    await served.start()
    yield served
    await served.stop()


async def _versions(nc: NATS, subjects: Subjects, job_ids: list[uuid.UUID]) -> JobVersions:
    body = _encoder.encode(GetJobVersions(job_ids=job_ids))
    reply = await nc.request(subjects.job_versions, body, timeout=10)
    return msgspec.json.decode(reply.data, type=JobVersions)


@pytest.mark.usefixtures("endpoints")
async def test_versions_are_the_databases_and_unknown_jobs_are_left_out(
    nats_client: NATS, subjects: Subjects, cached_store: PostgresJobStore, pool: Pool
) -> None:
    running, pending, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await apply_events([requested(running), submitted(running), started(running)], cached_store)
    await apply_events([requested(pending)], cached_store)

    asked = [running, pending, unknown, running]
    assert (await _versions(nats_client, subjects, asked)).versions == {running: 3, pending: 1}

    # Written behind the store's back (another replica, a restore): the answer follows.
    await pool.execute("UPDATE jobs SET version = version + 1 WHERE id = $1", running)
    assert (await _versions(nats_client, subjects, [running])).versions == {running: 4}
    assert (await _versions(nats_client, subjects, [])).versions == {}


@pytest.mark.usefixtures("endpoints")
async def test_more_ids_than_one_request_may_name_are_refused_422(
    nats_client: NATS, subjects: Subjects
) -> None:
    too_many = [str(uuid.uuid4()) for _ in range(MAX_VERSIONS_PER_REQUEST + 1)]
    for body in (_encoder.encode({"jobIds": too_many}), b'{"jobIds": ["nope"]}'):
        reply = await nats_client.request(subjects.job_versions, body, timeout=10)
        assert reply.headers is not None
        assert reply.headers["Nats-Service-Error-Code"] == "422"
