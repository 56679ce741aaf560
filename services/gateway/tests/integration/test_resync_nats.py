"""The resync adapter over real NATS, a stand-in answering the job-store's `versions` endpoint:
one request per round (per 1,000 jobs), none while no stream is open, a job behind handed to
its streams and counted once, a job-store that does not answer skipping the round quietly."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from gateway.adapters.resync import StreamResync
from gateway.hub import Hub
from jobs_proto.api import GetJobVersions, JobChanged, JobVersions
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import server_has_all

from ..fakes import FakeJobStore, RecordingObserver, job_view


class VersionsDouble:
    """Answers `versions` from `stored`, keeping every request.

    A stand-in, not the job-store: this file tests the adapter alone (its requests' shape and
    batching, over 1,000 running jobs nobody has to make); tests/e2e/test_gateway_resync.py
    runs it against the real job-store."""

    def __init__(self) -> None:
        self.stored: dict[uuid.UUID, int] = {}
        self.asked: list[GetJobVersions] = []

    async def respond(self, msg: Msg) -> None:
        query = msgspec.json.decode(msg.data, type=GetJobVersions)
        self.asked.append(query)
        found = {j: self.stored[j] for j in query.job_ids if j in self.stored}
        await msg.respond(msgspec.json.encode(JobVersions(versions=found)))


@pytest.fixture
async def versions(nats_client: NATS, subjects: Subjects) -> AsyncIterator[VersionsDouble]:
    double = VersionsDouble()
    subscription = await nats_client.subscribe(subjects.job_versions, cb=double.respond)
    await server_has_all(nats_client)
    yield double
    await subscription.unsubscribe()


def resync(
    nc: NATS, subjects: Subjects, hub: Hub, store: FakeJobStore, observer: RecordingObserver
) -> StreamResync:
    return StreamResync(nc, subjects, hub, store, observer, every_s=10, timeout_s=2)


async def test_a_job_behind_is_read_handed_to_its_streams_and_counted_once(
    nats_client: NATS, subjects: Subjects, versions: VersionsDouble
) -> None:
    hub, store, observer = Hub(), FakeJobStore(), RecordingObserver()
    behind, current = uuid.uuid4(), uuid.uuid4()
    rounds = resync(nats_client, subjects, hub, store, observer)
    hub.note_view(job_view(behind, 2), "alice")
    assert await rounds.round() == 0
    assert versions.asked == []  # no stream open: nothing asked

    with hub.watch_job(behind) as subscription, hub.watch_user("alice") as mine:
        hub.note_view(job_view(current, 4), "alice")
        versions.stored = {behind: 3, current: 4}
        store.put(job_view(behind, 3, "succeeded"))
        assert await rounds.round() == 1
        assert len(versions.asked) == 1
        assert set(versions.asked[0].job_ids) == {behind, current}
        changed = JobChanged(user_id="alice", job=job_view(behind, 3, "succeeded"))
        assert list(subscription.updates) == [changed]
        assert list(mine.updates) == [changed]
        assert observer.facts == [("missed_change",)]
        # Ended now: only the running job is asked about, and nothing is missed.
        assert await rounds.round() == 0
        assert [set(q.job_ids) for q in versions.asked[1:]] == [{current}]
        assert observer.facts == [("missed_change",)]


async def test_many_jobs_are_asked_in_requests_of_1000(
    nats_client: NATS, subjects: Subjects, versions: VersionsDouble
) -> None:
    hub, store, observer = Hub(), FakeJobStore(), RecordingObserver()
    for _ in range(2_001):
        hub.note_view(job_view(uuid.uuid4(), 1), "alice")
    with hub.watch_user("alice"):
        assert await resync(nats_client, subjects, hub, store, observer).round() == 0
    assert [len(q.job_ids) for q in versions.asked] == [1000, 1000, 1]
    assert store.asked == []


async def test_a_job_store_that_does_not_answer_skips_the_round(
    nats_client: NATS, subjects: Subjects
) -> None:
    hub, store, observer = Hub(), FakeJobStore(), RecordingObserver()
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as subscription:
        hub.note_view(job_view(job_id, 1), "alice")
        # Nobody serves `versions` under this prefix: no responders, at once.
        assert await resync(nats_client, subjects, hub, store, observer).round() == 0
        assert list(subscription.updates) == []
    assert (store.asked, observer.facts) == ([], [])
