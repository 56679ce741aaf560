"""`Idempotency-Key` over fake ports: the same key and body answer the first job again,
another body is refused, a failed publish is not kept (and its retry reuses the job id),
concurrent requests publish once, an abandoned key is finished by the next request."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from gateway.handlers import (
    IdempotencyPolicy,
    InvalidRequest,
    KeyInProgress,
    KeyReused,
    NewJob,
    admit_job_once,
    check_idempotency_key,
    idempotency_slot,
    request_fingerprint,
)
from gateway.limits import LimitExceeded
from gateway.ports import IdempotencyRecord, StoredRecord
from gateway.validation import MAX_IDEMPOTENCY_KEY
from jobs_proto.events import JobRequested
from jobs_runtime.errors import Unavailable
from jobs_testkit.waiting import eventually

from ..fakes import FakeIdempotencyKeys, FakeJobsStream, ManualClock, RefusingAdmission

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
JOB = NewJob(job_type="title_generation", input={"topic": "tides"})
SLOT = idempotency_slot("alice", "key-1")
FAST = IdempotencyPolicy(wait_s=0.5, stale_s=15.0, poll_s=0.01)


async def admit(
    bus: FakeJobsStream,
    keys: FakeIdempotencyKeys,
    *,
    fingerprint: str = "body-1",
    clock: ManualClock | None = None,
    policy: IdempotencyPolicy = FAST,
    admission: RefusingAdmission | None = None,
) -> tuple[uuid.UUID, bool]:
    admitted = await admit_job_once(
        "alice",
        SLOT,
        fingerprint,
        JOB,
        bus,
        keys,
        bus,
        clock=clock or ManualClock(AT),
        policy=policy,
        admission=admission,
    )
    return admitted.accepted.job_id, admitted.replayed


async def test_the_same_key_and_body_answer_the_first_job_again() -> None:
    bus, keys = FakeJobsStream(), FakeIdempotencyKeys()
    first, replayed = await admit(bus, keys)
    assert not replayed
    assert [e.job_id for e in bus.stored] == [first]
    assert keys.records[SLOT].record.state == "admitted"
    again, replayed = await admit(bus, keys)
    assert (again, replayed) == (first, True)
    assert len(bus.stored) == 1


async def test_another_body_with_the_key_is_refused_and_publishes_nothing() -> None:
    bus, keys = FakeJobsStream(), FakeIdempotencyKeys()
    await admit(bus, keys)
    with pytest.raises(KeyReused):
        await admit(bus, keys, fingerprint="body-2")
    assert len(bus.stored) == 1


async def test_a_failed_publish_is_not_kept_and_its_retry_reuses_the_job_id() -> None:
    bus, keys = FakeJobsStream(down=True), FakeIdempotencyKeys()
    with pytest.raises(Unavailable):
        await admit(bus, keys)
    record = keys.records[SLOT].record
    assert record.state == "failed"
    bus.down = False
    job_id, replayed = await admit(bus, keys)
    assert (job_id, replayed) == (record.job_id, False)
    assert [e.job_id for e in bus.stored] == [job_id]


async def test_an_ambiguous_publish_never_becomes_two_jobs() -> None:
    bus, keys = FakeJobsStream(ambiguous=True), FakeIdempotencyKeys()
    with pytest.raises(Unavailable):
        await admit(bus, keys)
    bus.ambiguous = False
    job_id, replayed = await admit(bus, keys)
    # Found in the stream: that job is the answer, nothing published again.
    assert replayed
    assert [e.job_id for e in bus.stored] == [job_id]
    # And another body cannot take the key of a job that exists.
    with pytest.raises(KeyReused):
        await admit(bus, keys, fingerprint="body-2")


async def test_a_failed_key_with_nothing_published_is_free_for_another_body() -> None:
    bus, keys = FakeJobsStream(down=True), FakeIdempotencyKeys()
    with pytest.raises(Unavailable):
        await admit(bus, keys)
    failed = keys.records[SLOT].record.job_id
    bus.down = False
    job_id, replayed = await admit(bus, keys, fingerprint="body-2")
    assert not replayed
    assert job_id != failed
    assert [e.job_id for e in bus.stored] == [job_id]


async def test_a_limit_refusal_publishes_nothing_and_is_not_kept() -> None:
    bus, keys, limit = FakeJobsStream(), FakeIdempotencyKeys(), RefusingAdmission()
    with pytest.raises(LimitExceeded):
        await admit(bus, keys, admission=limit)
    assert bus.stored == []
    limit.refuse = False
    job_id, replayed = await admit(bus, keys, admission=limit)
    assert not replayed
    assert limit.released == [job_id]


async def test_concurrent_requests_with_one_key_publish_one_job() -> None:
    gate = asyncio.Event()
    bus, keys = FakeJobsStream(gate=gate), FakeIdempotencyKeys()
    requests = [asyncio.create_task(admit(bus, keys)) for _ in range(5)]
    # All five in flight before the publish may finish: the first holds the key at the gate,
    # the others have read it (tasks take their first step in the order they were created).
    await eventually(lambda: keys.reads >= 5)
    gate.set()
    answers = await asyncio.gather(*requests)
    assert len({job_id for job_id, _ in answers}) == 1
    assert sorted(replayed for _, replayed in answers) == [False, True, True, True, True]
    assert len(bus.stored) == 1


async def test_a_request_still_in_progress_after_the_wait_is_a_conflict() -> None:
    gate = asyncio.Event()
    bus, keys = FakeJobsStream(gate=gate), FakeIdempotencyKeys()
    first = asyncio.create_task(admit(bus, keys))
    await eventually(lambda: SLOT in keys.records)  # the first holds the key at the gate
    with pytest.raises(KeyInProgress):
        await admit(bus, keys, policy=IdempotencyPolicy(wait_s=0.05, poll_s=0.01))
    gate.set()
    await first
    assert len(bus.stored) == 1


def abandoned(keys: FakeIdempotencyKeys, job_id: uuid.UUID, since: datetime) -> None:
    record = IdempotencyRecord(fingerprint="body-1", job_id=job_id, state="admitting", since=since)
    keys.records[SLOT] = StoredRecord(record, 7)
    keys.revision = 7


async def test_an_abandoned_key_whose_job_was_published_answers_that_job() -> None:
    bus, keys = FakeJobsStream(), FakeIdempotencyKeys()
    job_id = uuid.uuid4()
    bus.stored.append(
        JobRequested(
            job_id=job_id, occurred_at=AT, user_id="alice", job_type="title_generation", input={}
        )
    )
    abandoned(keys, job_id, AT - timedelta(seconds=20))
    assert await admit(bus, keys) == (job_id, True)
    assert keys.records[SLOT].record.state == "admitted"
    assert len(bus.stored) == 1


async def test_an_abandoned_key_without_its_job_publishes_it_with_its_id() -> None:
    bus, keys = FakeJobsStream(), FakeIdempotencyKeys()
    job_id = uuid.uuid4()
    abandoned(keys, job_id, AT - timedelta(seconds=20))
    assert await admit(bus, keys) == (job_id, False)
    assert [e.job_id for e in bus.stored] == [job_id]


async def test_a_fresh_key_in_progress_is_not_taken_over() -> None:
    bus, keys = FakeJobsStream(), FakeIdempotencyKeys()
    abandoned(keys, uuid.uuid4(), AT - timedelta(seconds=1))
    with pytest.raises(KeyInProgress):
        await admit(bus, keys, policy=IdempotencyPolicy(wait_s=0.03, poll_s=0.01))
    assert bus.stored == []


async def test_keys_unavailable_is_unavailable() -> None:
    bus, keys = FakeJobsStream(), FakeIdempotencyKeys(down=True)
    with pytest.raises(Unavailable):
        await admit(bus, keys)
    assert bus.stored == []


def test_slots_are_per_user_and_never_collide() -> None:
    assert idempotency_slot("alice", "k") == idempotency_slot("alice", "k")
    assert idempotency_slot("alice", "k") != idempotency_slot("bob", "k")
    # Without the length prefix these two would hash the same material.
    assert idempotency_slot("ab", "c") != idempotency_slot("a", "bc")
    assert len(idempotency_slot("alice", "ü" * 255)) == 64


def test_the_fingerprint_ignores_spacing_and_key_order_not_the_route() -> None:
    body = {"type": "t", "input": {"topic": "x", "count": 3}}
    reordered = {"input": {"count": 3, "topic": "x"}, "type": "t"}
    assert request_fingerprint("/api/jobs", body) == request_fingerprint("/api/jobs", reordered)
    assert request_fingerprint("/api/jobs", body) != request_fingerprint("/api/other", body)
    changed = {"type": "t", "input": {"topic": "y", "count": 3}}
    assert request_fingerprint("/api/jobs", body) != request_fingerprint("/api/jobs", changed)


def test_the_key_is_one_to_255_characters() -> None:
    assert check_idempotency_key(None) is None
    assert check_idempotency_key("k" * MAX_IDEMPOTENCY_KEY) == "k" * 255
    for bad in ("", "k" * (MAX_IDEMPOTENCY_KEY + 1)):
        with pytest.raises(InvalidRequest) as refused:
            check_idempotency_key(bad)
        assert [e.parameter for e in refused.value.errors] == ["Idempotency-Key"]
