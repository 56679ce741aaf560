"""Per-user limits with a fake clock and a fake job-store: the token bucket's burst, refill
and `Retry-After`; the open-jobs count from the job-store plus what this replica admitted
and the job-store has not seen; the finished-jobs cache's bound."""

import uuid
from datetime import UTC, datetime

import pytest

from gateway.cache import CachedJob, FinishedJobs
from gateway.limits import LimitExceeded, OpenJobs, RequestRate
from jobs_proto.api import JobView
from jobs_proto.status import JobStatus

from ..fakes import FakeJobStore, Ticks

AT = datetime(2030, 1, 2, tzinfo=UTC)


def test_a_user_gets_the_burst_then_the_rate() -> None:
    ticks = Ticks()
    rate = RequestRate(2.0, 3.0, monotonic=ticks)
    for _ in range(3):
        rate.take("alice")
    with pytest.raises(LimitExceeded) as refused:
        rate.take("alice")
    assert refused.value.retry_after_s == 1  # half a second, rounded up to a whole one
    rate.take("bob")  # another user has a bucket of their own
    ticks.now += 0.5
    rate.take("alice")  # one token back after 1/rate seconds
    with pytest.raises(LimitExceeded):
        rate.take("alice")
    ticks.now += 100
    for _ in range(3):  # refilled to the burst, no further
        rate.take("alice")
    with pytest.raises(LimitExceeded):
        rate.take("alice")


def test_a_slow_rate_asks_for_a_longer_wait() -> None:
    rate = RequestRate(0.1, 1.0, monotonic=Ticks())
    rate.take("alice")
    with pytest.raises(LimitExceeded) as refused:
        rate.take("alice")
    assert refused.value.retry_after_s == 10


def test_buckets_are_bounded_and_a_forgotten_one_comes_back_full() -> None:
    rate = RequestRate(1.0, 1.0, max_users=2, monotonic=Ticks())
    rate.take("alice")
    rate.take("bob")
    rate.take("carol")  # pushes alice out
    rate.take("alice")
    with pytest.raises(LimitExceeded):
        rate.take("alice")


def view(job_id: uuid.UUID, status: JobStatus) -> JobView:
    return JobView(
        job_id=job_id,
        type="title_generation",
        status=status,
        version=1,
        input={},
        output=None,
        error=None,
        prediction_id=None,
        created_at=AT,
        updated_at=AT,
        completed_at=None,
    )


def add(store: FakeJobStore, status: JobStatus) -> uuid.UUID:
    job_id = uuid.uuid4()
    store.put(view(job_id, status))
    return job_id


async def admit(limit: OpenJobs) -> uuid.UUID:
    await limit.hold("alice")
    job_id = uuid.uuid4()
    limit.release("alice", job_id)
    return job_id


async def test_open_jobs_in_the_job_store_count_and_finished_ones_do_not() -> None:
    store = FakeJobStore()
    limit = OpenJobs(store, 2)
    add(store, "pending")
    for status in ("succeeded", "failed", "canceled"):
        add(store, status)
    await limit.hold("alice")
    limit.release("alice", None)
    add(store, "processing")
    with pytest.raises(LimitExceeded) as refused:
        await limit.hold("alice")
    assert refused.value.retry_after_s >= 1
    assert store.listed[-1].statuses == ["pending", "processing"]
    assert store.listed[-1].limit == 3  # max_open + 1: more need not be known


async def test_jobs_admitted_here_count_until_the_job_store_has_them() -> None:
    ticks = Ticks()
    store = FakeJobStore()
    limit = OpenJobs(store, 2, recent_s=10, monotonic=ticks)
    first = await admit(limit)
    second = await admit(limit)
    # Neither consumed by the job-store yet: still two open jobs.
    with pytest.raises(LimitExceeded):
        await limit.hold("alice")
    # Consumed, and one already finished: room for one more.
    store.put(view(first, "processing"))
    store.put(view(second, "succeeded"))
    await admit(limit)
    with pytest.raises(LimitExceeded):
        await limit.hold("alice")
    # Past the window, what the job-store does not know is not counted any more.
    ticks.now += 11
    await limit.hold("alice")


async def test_holds_in_flight_count() -> None:
    limit = OpenJobs(FakeJobStore(), 1)
    await limit.hold("alice")
    with pytest.raises(LimitExceeded):
        await limit.hold("alice")
    limit.release("alice", None)
    await limit.hold("alice")


async def test_limits_above_a_page_follow_the_cursor() -> None:
    store = FakeJobStore(page_size=2)
    limit = OpenJobs(store, 5)
    for _ in range(5):
        add(store, "pending")
    with pytest.raises(LimitExceeded):
        await limit.hold("alice")
    assert [q.cursor for q in store.listed] == [None, "2", "4"]


async def test_without_the_job_store_only_what_this_replica_knows_counts() -> None:
    store = FakeJobStore()
    limit = OpenJobs(store, 1)
    add(store, "pending")
    store.down = True
    await admit(limit)  # the job-store's open job is not seen
    with pytest.raises(LimitExceeded):
        await limit.hold("alice")


def test_the_cache_keeps_the_most_recent_answers_within_its_bytes() -> None:
    cache = FinishedJobs(max_bytes=800)
    ids = [uuid.uuid4() for _ in range(9)]
    for job_id in ids:
        cache.put(job_id, CachedJob("alice", "tag", b"x" * 100))
    assert len(cache) == 8
    assert cache.get(ids[0]) is None
    assert cache.get(ids[1]) is not None  # now the most recently used
    cache.put(uuid.uuid4(), CachedJob("alice", "tag", b"x" * 100))
    assert cache.get(ids[1]) is not None
    assert cache.get(ids[2]) is None
    # One answer bigger than an eighth of the bound is not kept at all.
    big = uuid.uuid4()
    cache.put(big, CachedJob("alice", "tag", b"x" * 101))
    assert cache.get(big) is None


def test_a_cached_answer_expires() -> None:
    ticks = Ticks()
    cache = FinishedJobs(max_bytes=800, ttl_s=60, monotonic=ticks)
    job_id = uuid.uuid4()
    cache.put(job_id, CachedJob("alice", "tag", b"{}"))
    ticks.now += 59
    assert cache.get(job_id) is not None
    ticks.now += 1
    assert cache.get(job_id) is None
    assert len(cache) == 0
