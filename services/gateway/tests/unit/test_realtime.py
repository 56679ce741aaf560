"""The hub and the event streams without I/O: updates reach the subscribers of their job and
of its owner only, a subscriber that falls behind is dropped without holding anyone up,
stopping ends every stream with a `retry:` hint, and a stream sends only what is newer than
what its client has."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.hub import Hub, StreamPolicy
from gateway.realtime import (
    already_final,
    job_events,
    known_version,
    parse_position,
    parse_version,
    position,
    user_events,
)
from jobs_proto.api import JobChanged, JobProgress, JobView
from jobs_proto.status import JobStatus

T0 = datetime(2030, 1, 2, tzinfo=UTC)
FAST = StreamPolicy(keepalive_s=0.05, queue_size=4, retry_ms=700)
# Room for every update a test publishes before its stream reads them.
ROOMY = StreamPolicy(keepalive_s=0.05, queue_size=64, retry_ms=700)


def view(
    job_id: uuid.UUID,
    version: int,
    status: JobStatus = "processing",
    output: str | None = None,
    prediction_id: str | None = None,
) -> JobView:
    at = T0 + timedelta(seconds=version)
    return JobView(
        job_id=job_id,
        type="script_generation",
        status=status,
        version=version,
        input={"topic": "x"},
        output=output,
        error=None,
        prediction_id=prediction_id,
        created_at=T0,
        updated_at=at,
        completed_at=None,
    )


def change(job: JobView, user_id: str = "alice", omitted: bool = False) -> JobChanged:
    return JobChanged(user_id=user_id, job=job, output_omitted=omitted)


async def no_reload(job_id: uuid.UUID) -> JobView | None:
    raise AssertionError("not expected to read the job again")


async def take(chunks: AsyncIterator[bytes], n: int) -> list[bytes]:
    async with asyncio.timeout(2):
        return [await anext(chunks) for _ in range(n)]


def test_updates_reach_the_jobs_and_the_owners_subscribers_only() -> None:
    hub = Hub(FAST)
    mine, other = uuid.uuid4(), uuid.uuid4()
    with (
        hub.watch_job(mine) as job_sub,
        hub.watch_user("alice") as alice,
        hub.watch_user("bob") as bob,
    ):
        assert hub.open_streams == 3
        hub.publish_progress(JobProgress(job_id=mine, output="a", seq=1))  # owner unknown yet
        hub.publish_change(change(view(mine, 1)))
        hub.publish_progress(JobProgress(job_id=mine, output="ab", seq=2))
        hub.publish_change(change(view(other, 1), user_id="carol"))
        assert len(job_sub.updates) == 3
        assert [type(u).__name__ for u in alice.updates] == ["JobChanged", "JobProgress"]
        assert not bob.updates
    assert hub.open_streams == 0


def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_go_on() -> None:
    hub = Hub(FAST)
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as slow, hub.watch_job(job_id) as fast:
        for seq in range(FAST.queue_size + 1):
            hub.publish_progress(JobProgress(job_id=job_id, output="x", seq=seq))
            if fast.updates:
                fast.updates.popleft()  # this one keeps up
        assert slow.dropped
        assert not fast.dropped
        assert hub.dropped == 1


async def test_a_job_stream_sends_newer_states_and_progress_and_ends_at_the_terminal_one() -> None:
    hub = Hub(FAST)
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as subscription:
        # Arrived between subscribing and reading: older than the state read, dropped.
        hub.publish_change(change(view(job_id, 2)))
        chunks = job_events(view(job_id, 2), 0, subscription, no_reload, FAST)
        first = await anext(chunks)
        assert first.startswith(b"event: status\nid: 2\ndata: {")
        assert await anext(chunks) == b": keepalive\n\n"
        hub.publish_progress(JobProgress(job_id=job_id, output="Hel", seq=3, prediction_id="p1"))
        hub.publish_progress(JobProgress(job_id=job_id, output="He", seq=2, prediction_id="p1"))
        hub.publish_change(change(view(job_id, 3, "succeeded", "Hello")))
        rest = [chunk async for chunk in chunks]
    assert rest[0] == b'event: progress\ndata: {"jobId":"' + str(job_id).encode() + (
        b'","output":"Hel","seq":3,"predictionId":"p1"}\n\n'
    )
    assert rest[1].startswith(b"event: status\nid: 3\n")
    assert b'"output":"Hello"' in rest[1]
    assert len(rest) == 2


async def test_a_stream_skips_the_state_its_client_has_and_reads_an_omitted_output() -> None:
    hub = Hub(FAST)
    job_id = uuid.uuid4()

    async def reload(wanted: uuid.UUID) -> JobView | None:
        return view(wanted, 3, "succeeded", "the whole text")

    with hub.watch_job(job_id) as subscription:
        chunks = job_events(view(job_id, 2), 2, subscription, reload, FAST)
        hub.publish_change(change(view(job_id, 3, "succeeded"), omitted=True))
        sent = [chunk async for chunk in chunks]
    assert len(sent) == 1
    assert sent[0].startswith(b"event: status\nid: 3\n")
    assert b'"output":"the whole text"' in sent[0]


async def test_stopping_ends_every_stream_with_a_retry_hint() -> None:
    hub = Hub(FAST)
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as one, hub.watch_user("alice") as many:
        job_stream = job_events(view(job_id, 1), 0, one, no_reload, FAST)
        user_stream = user_events([view(job_id, 1)], many, no_reload, FAST)
        await take(job_stream, 1)
        await take(user_stream, 1)
        hub.stop()
        assert [c async for c in job_stream][-1].startswith(b"retry: 700\n")
        assert [c async for c in user_stream][-1].startswith(b"retry: 700\n")
    # A stream opened while stopping ends at once too.
    with hub.watch_job(job_id) as late:
        assert late.reconnect_ms == 700


async def test_a_resync_ends_every_stream_with_a_spread_out_retry() -> None:
    hub = Hub(FAST)
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as one, hub.watch_user("alice") as many:
        job_stream = job_events(view(job_id, 1), 0, one, no_reload, FAST)
        user_stream = user_events([], many, no_reload, FAST)
        await take(job_stream, 1)
        jitters = iter([0.0, 1.0])
        assert hub.resync(lambda: next(jitters)) == 2
        retries = sorted([[c async for c in job_stream][-1], [c async for c in user_stream][-1]])
    assert retries[0].startswith(b"retry: 3500\n")  # 700 * (1 + 4 * 1.0)
    assert retries[1].startswith(b"retry: 700\n")
    # Unlike stopping, streams opened afterwards are not ended.
    with hub.watch_job(job_id) as later:
        assert later.reconnect_ms is None


async def test_a_dropped_stream_ends_so_its_client_reconnects() -> None:
    hub = Hub(FAST)
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as subscription:
        chunks = job_events(view(job_id, 1), 0, subscription, no_reload, FAST)
        await take(chunks, 1)
        for seq in range(FAST.queue_size + 1):
            hub.publish_progress(JobProgress(job_id=job_id, output="x", seq=seq))
        assert [c async for c in chunks] == []


async def test_the_user_stream_skips_stale_states_and_progress_of_finished_jobs() -> None:
    hub = Hub(FAST)
    job_id = uuid.uuid4()
    with hub.watch_user("alice") as subscription:
        chunks = user_events([view(job_id, 2)], subscription, no_reload, FAST)
        first = await anext(chunks)
        assert f"id: {position(view(job_id, 2))}\n".encode() in first
        hub.publish_change(change(view(job_id, 2)))
        hub.publish_change(change(view(job_id, 3, "failed")))
        hub.publish_progress(JobProgress(job_id=job_id, output="late", seq=9))
        sent = await take(chunks, 2)
    assert b'"status":"failed"' in sent[0]
    assert sent[1] == b": keepalive\n\n"


@pytest.mark.parametrize(
    ("header", "version"), [(None, 0), ("", 0), ("7", 7), (" 3 ", 3), ("x", 0), ("-2", 0)]
)
def test_last_event_id_as_a_version(header: str | None, version: int) -> None:
    assert parse_version(header) == version


def test_a_version_the_job_never_had_counts_as_none() -> None:
    job = view(uuid.uuid4(), 3)
    assert known_version("3", job) == 3
    assert known_version("2", job) == 2
    assert known_version("4", job) == 0
    assert known_version(None, job) == 0


def test_a_terminal_job_the_client_has_is_final() -> None:
    job_id = uuid.uuid4()
    assert already_final(view(job_id, 3, "canceled"), 3)
    assert not already_final(view(job_id, 3, "canceled"), 2)
    assert not already_final(view(job_id, 3, "processing"), 3)


def test_a_position_resumes_a_little_before_itself() -> None:
    at = view(uuid.uuid4(), 4)
    since = parse_position(position(at))
    assert since is not None
    assert since < at.updated_at
    assert at.updated_at - since <= timedelta(seconds=5)
    assert parse_position("nonsense") is None
    assert parse_position(None) is None
    assert parse_position("9" * 40) is None


async def test_a_job_stream_drops_progress_of_any_prediction_but_the_jobs() -> None:
    """Progress of another prediction never reaches the job's stream, whether the job was bound
    when the stream opened or became bound on it; before it is bound, any prediction's goes."""
    hub = Hub(ROOMY)
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as subscription:
        chunks = job_events(view(job_id, 1, "pending"), 0, subscription, no_reload, ROOMY)
        assert (await anext(chunks)).startswith(b"event: status\nid: 1\n")
        hub.publish_progress(JobProgress(job_id=job_id, output="a", seq=1, prediction_id="p1"))
        hub.publish_change(change(view(job_id, 2, prediction_id="p1")))
        hub.publish_progress(JobProgress(job_id=job_id, output="EVIL", seq=9, prediction_id="p2"))
        hub.publish_progress(JobProgress(job_id=job_id, output="OLD", seq=8))  # names none
        hub.publish_progress(JobProgress(job_id=job_id, output="ab", seq=2, prediction_id="p1"))
        hub.publish_change(change(view(job_id, 3, "succeeded", "abc", prediction_id="p1")))
        rest = [chunk async for chunk in chunks]
    texts = [chunk for chunk in rest if chunk.startswith(b"event: progress")]
    assert len(texts) == 2
    assert b'"output":"a"' in texts[0]
    assert b'"output":"ab"' in texts[1]
    assert not any(b"EVIL" in chunk or b"OLD" in chunk for chunk in rest)


async def test_a_bound_job_stream_drops_another_predictions_progress_from_the_start() -> None:
    hub = Hub(ROOMY)
    job_id = uuid.uuid4()
    with hub.watch_job(job_id) as subscription:
        chunks = job_events(view(job_id, 2, prediction_id="p1"), 0, subscription, no_reload, ROOMY)
        await anext(chunks)
        hub.publish_progress(JobProgress(job_id=job_id, output="EVIL", seq=5, prediction_id="p2"))
        hub.publish_progress(JobProgress(job_id=job_id, output="mine", seq=1, prediction_id="p1"))
        (first,) = await take(chunks, 1)
    assert b'"output":"mine"' in first


async def test_the_users_stream_drops_progress_of_any_prediction_but_each_jobs() -> None:
    hub = Hub(ROOMY)
    bound, fresh = uuid.uuid4(), uuid.uuid4()
    with hub.watch_user("alice") as subscription:
        chunks = user_events(
            [view(bound, 2, prediction_id="p1"), view(fresh, 1, "pending")],
            subscription,
            no_reload,
            ROOMY,
        )
        await take(chunks, 2)  # the two initial states
        # Not newer than what was sent (no event), but it tells the hub the job's owner.
        hub.publish_change(change(view(bound, 2, prediction_id="p1")))
        hub.publish_change(change(view(fresh, 2, prediction_id="q1")))
        for job_id, prediction_id, text in [
            (bound, "p2", "EVIL-1"),
            (fresh, "q2", "EVIL-2"),
            (bound, "p1", "one"),
            (fresh, "q1", "two"),
        ]:
            hub.publish_progress(
                JobProgress(job_id=job_id, output=text, seq=1, prediction_id=prediction_id)
            )
        received = await take(chunks, 3)
    assert received[0].startswith(b"event: status")
    assert [b'"output":"one"' in received[1], b'"output":"two"' in received[2]] == [True, True]
