"""The consumer loop against a real NATS server with JetStream."""

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from jobs_proto.events import JobRequested, JobSubmitted, encode_event
from jobs_proto.stream import ConsumerSpec, StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, server_has_all
from jobs_runtime.consumer import SUBJECT_MISMATCH, UNDECODABLE, ConsumerLoop
from jobs_runtime.pacing import Allowance
from jobs_runtime.retry import RetryLater
from jobs_testkit.waiting import eventually

Handler = Callable[[Any], Awaitable[None]]


def requested(job_id: uuid.UUID | None = None) -> JobRequested:
    return JobRequested(
        job_id=job_id or uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        user_id="user-1",
        job_type="script_generation",
        input={"topic": "tides"},
    )


def spec(subjects: Subjects) -> ConsumerSpec:
    # A short ack_wait so a message left unacknowledged visibly comes back within the test.
    return ConsumerSpec(durable="worker", filter_subjects=(subjects.all_events,), ack_wait_s=1.0)


@asynccontextmanager
async def running(
    nc: NATS, stream: StreamSpec, subjects: Subjects, handlers: dict[str, Handler], **kw: Any
) -> AsyncIterator[ConsumerLoop]:
    loop = ConsumerLoop(
        nc.jetstream(),
        stream=stream.name,
        spec=spec(subjects),
        subjects=subjects,
        handlers=handlers,
        fetch_timeout_s=0.2,
        **kw,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.wait_for(loop.ready.wait(), 10)
    try:
        yield loop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def consumer_state(nc: NATS, stream: StreamSpec) -> tuple[int, int, int]:
    info = await nc.jetstream().consumer_info(stream.name, "worker")
    return info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0


async def test_a_message_is_processed_once_and_acked(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    seen: list[JobRequested] = []

    async def handle(event: JobRequested) -> None:
        seen.append(event)

    event = requested()
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)
    async with running(nats_client, jobs_stream_ready, subjects, {"requested": handle}):
        await eventually(lambda: bool(seen))

        async def acked() -> bool:
            # Nothing pending, nothing awaiting an ack: JetStream will not deliver it again.
            return await consumer_state(nats_client, jobs_stream_ready) == (0, 0, 0)

        await eventually(acked, what="the message is acked")
    assert seen == [event]


async def test_a_republished_event_is_dropped_by_its_message_id(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    event = requested()
    first = await publisher.publish(event)
    again = await publisher.publish(requested(event.job_id))
    assert not first.duplicate
    assert again.duplicate
    assert again.seq == first.seq


async def test_a_failing_handlers_message_comes_back_after_its_delay(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    attempts: list[uuid.UUID] = []
    first = JobSubmitted(job_id=uuid.uuid4(), occurred_at=datetime.now(UTC), prediction_id="p1")

    async def flaky(event: JobSubmitted) -> None:
        attempts.append(event.job_id)
        if attempts == [first.job_id]:
            raise ConnectionError("replicate unreachable")

    delays: list[int] = []

    def delay(delivered: int) -> float:
        delays.append(delivered)
        return 0.5

    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(first)
    async with running(nats_client, jobs_stream_ready, subjects, {"submitted": flaky}, delay=delay):
        later = await publish_after_the_nak(nats_client, publisher, lambda: bool(delays))
        await eventually(lambda: len(attempts) >= 3)
        await eventually(lambda: _settled(nats_client, jobs_stream_ready))
    # Nak'ed with a delay, not redelivered at once: by order, not by a clock. The nak reached
    # the server before `later` was published, so a redelivery at once would come first.
    assert attempts == [first.job_id, later.job_id, first.job_id]
    assert delays == [1]
    pending, ack_pending, redelivered = await consumer_state(nats_client, jobs_stream_ready)
    assert (pending, ack_pending) == (0, 0)
    assert redelivered == 0  # counted while outstanding; zero once acked


async def publish_after_the_nak(
    nc: NATS, publisher: EventPublisher, naked: Callable[[], bool]
) -> JobSubmitted:
    """Once `naked()` holds (the loop chose its delay and sends the nak next, on this same
    connection), a flush so the server has the nak, then one more event; returns it."""
    await eventually(naked)
    await server_has_all(nc)
    event = JobSubmitted(job_id=uuid.uuid4(), occurred_at=datetime.now(UTC), prediction_id="p2")
    await publisher.publish(event)
    return event


async def _settled(nc: NATS, stream: StreamSpec) -> bool:
    pending, ack_pending, _ = await consumer_state(nc, stream)
    return pending == 0 and ack_pending == 0


async def test_an_unknown_kind_stays_unacknowledged_and_others_flow(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    seen: list[JobRequested] = []

    async def handle(event: JobRequested) -> None:
        seen.append(event)

    js = nats_client.jetstream()
    newer = f"{subjects.prefix}job.teleported.{uuid.uuid4()}"
    await js.publish(newer, b'{"kind":"teleported"}')
    event = requested()
    await EventPublisher(js, subjects).publish(event)
    async with running(nats_client, jobs_stream_ready, subjects, {"requested": handle}):
        await eventually(lambda: bool(seen))

        async def redelivered() -> bool:
            _, ack_pending, redelivered = await consumer_state(nats_client, jobs_stream_ready)
            return ack_pending == 1 and redelivered == 1

        # Back after ack_wait, and still not acknowledged: it waits for a release that knows it.
        await eventually(redelivered)
    assert seen == [event]


async def test_a_malformed_body_is_set_aside_without_blocking_the_consumer(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    seen: list[JobRequested] = []

    async def handle(event: JobRequested) -> None:
        seen.append(event)

    js = nats_client.jetstream()
    await js.publish(f"{subjects.prefix}job.requested.{uuid.uuid4()}", b"{not json")
    mismatched = requested()
    await js.publish(f"{subjects.prefix}job.requested.{uuid.uuid4()}", encode_event(mismatched))
    event = requested()
    await EventPublisher(js, subjects).publish(event)
    async with running(nats_client, jobs_stream_ready, subjects, {"requested": handle}):
        await eventually(lambda: _settled(nats_client, jobs_stream_ready))
    assert seen == [event]
    stream = await js.stream_info(jobs_stream_ready.name)
    assert stream.state.messages == 3  # terminated, not deleted: still there to inspect


async def test_a_handler_can_ask_to_be_retried_shortly_without_failing(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="jobs_runtime.consumer")
    attempts: list[uuid.UUID] = []
    event = JobSubmitted(job_id=uuid.uuid4(), occurred_at=datetime.now(UTC), prediction_id="p1")

    async def early(handled: JobSubmitted) -> None:
        attempts.append(handled.job_id)
        if handled.job_id == event.job_id and attempts.count(event.job_id) < 3:
            raise RetryLater("its job is not known yet", delay_s=0.3, quick_attempts=5)

    def deferrals() -> int:
        return sum(r.getMessage().startswith("not yet") for r in caplog.records)

    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(event)
    # The loop's own backoff would wait a minute: only the handler's 0.3 s can pass this test.
    async with running(
        nats_client, jobs_stream_ready, subjects, {"submitted": early}, delay=lambda _: 60.0
    ):
        # After each deferral one more event: handled before the deferred one comes back,
        # which it would not be if the nak carried no delay (by order, not by a clock).
        later = [await publish_after_the_nak(nats_client, publisher, lambda: deferrals() >= 1)]
        await eventually(lambda: attempts.count(event.job_id) >= 2)
        later.append(await publish_after_the_nak(nats_client, publisher, lambda: deferrals() >= 2))
        await eventually(lambda: attempts.count(event.job_id) >= 3)
        await eventually(lambda: _settled(nats_client, jobs_stream_ready))
    first, second = (e.job_id for e in later)
    assert attempts == [event.job_id, first, event.job_id, second, event.job_id]
    waits = [r for r in caplog.records if r.getMessage().startswith("not yet")]
    assert len(waits) == 2
    assert all(r.exc_info is None and r.levelname == "INFO" for r in waits)


async def test_a_rejected_message_is_handed_to_the_hook_with_its_reason(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    rejected: list[tuple[str, str]] = []

    async def set_aside(msg: Msg, reason: str, detail: str) -> None:
        rejected.append((msg.subject, reason))

    js = nats_client.jetstream()
    garbled = f"{subjects.prefix}job.requested.{uuid.uuid4()}"
    await js.publish(garbled, b"{not json")
    elsewhere = f"{subjects.prefix}job.requested.{uuid.uuid4()}"
    await js.publish(elsewhere, encode_event(requested()))

    async def ignore(event: JobRequested) -> None:
        raise AssertionError("a rejected message reached the handler")

    async with running(
        nats_client, jobs_stream_ready, subjects, {"requested": ignore}, on_reject=set_aside
    ):
        await eventually(lambda: _settled(nats_client, jobs_stream_ready))
    assert sorted(rejected) == sorted([(garbled, UNDECODABLE), (elsewhere, SUBJECT_MISMATCH)])


async def test_pace_takes_only_what_it_allows_and_leaves_the_rest_in_the_stream(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    allowed = [3]  # then nothing, until the test opens the gate
    asked = 0

    async def pace() -> Allowance:
        nonlocal asked
        asked += 1
        return Allowance(allowed[0], wait_s=0.05)

    seen: list[JobRequested] = []

    async def handle(event: JobRequested) -> None:
        seen.append(event)
        allowed[0] -= 1

    publisher = EventPublisher(nats_client.jetstream(), subjects)
    for _ in range(10):
        await publisher.publish(requested())
    async with running(nats_client, jobs_stream_ready, subjects, {"requested": handle}, pace=pace):
        await eventually(lambda: len(seen) == 3)
        # Twice more the loop asks and is refused, so one whole round ran after the third
        # message: a barrier, not a pause.
        asked_then = asked
        await eventually(lambda: asked >= asked_then + 2, what="the pace refuses a whole round")
        assert len(seen) == 3
        # Messages that must wait were never delivered: nothing to redeliver later.
        assert await consumer_state(nats_client, jobs_stream_ready) == (7, 0, 0)
        assert asked > 3
        allowed[0] = 100
        await eventually(lambda: len(seen) == 10)


def pull_requests(stream: StreamSpec) -> str:
    """The subject the loop's pull requests go to, overheard by a test to count and read them."""
    return f"$JS.API.CONSUMER.MSG.NEXT.{stream.name}.worker"


def waits_at_least(seconds: float, requests: list[bytes]) -> bool:
    """Whether the last pull request is a long one: for one message, expiring after `seconds`
    or more (nats-py sends `expires` in nanoseconds, a hair short of what it was asked)."""
    if not requests:
        return False
    last = msgspec.json.decode(requests[-1])
    return bool(last.get("batch") == 1 and last.get("expires", 0) >= (seconds - 1) * 1e9)


async def test_an_idle_consumer_asks_rarely_and_still_gets_the_next_message_at_once(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    seen: list[JobRequested] = []
    requests: list[bytes] = []
    asked_when_handled: list[int] = []

    async def handle(event: JobRequested) -> None:
        asked_when_handled.append(len(requests))
        seen.append(event)

    async def count(msg: Msg) -> None:
        requests.append(msg.data)

    pulls = await nats_client.subscribe(pull_requests(jobs_stream_ready), cb=count)
    try:
        async with running(
            nats_client, jobs_stream_ready, subjects, {"requested": handle}, idle_timeout_s=30.0
        ):
            # Rarely: the short fetch finds nothing, then one request waits 30 s for the next
            # message (read from the request itself, not from counting over a pause).
            await eventually(lambda: waits_at_least(30, requests), what="the long request")
            asked = len(requests)
            assert asked <= 4, requests  # one short fetch (nats-py may probe first), one long
            event = requested()
            await EventPublisher(nats_client.jetstream(), subjects).publish(event)
            await eventually(lambda: bool(seen), within=10)
            # At once: the request already waiting brought it, no other was sent before it
            # (the loop asks again only after handling, so none can be missed here).
            assert asked_when_handled == [asked]
            assert seen == [event]
    finally:
        await pulls.unsubscribe()


async def test_an_idle_consumer_stops_at_once(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    requests: list[bytes] = []

    async def count(msg: Msg) -> None:
        requests.append(msg.data)

    pulls = await nats_client.subscribe(pull_requests(jobs_stream_ready), cb=count)
    loop = ConsumerLoop(
        nats_client.jetstream(),
        stream=jobs_stream_ready.name,
        spec=spec(subjects),
        subjects=subjects,
        handlers={},
        fetch_timeout_s=0.2,
        idle_timeout_s=3600.0,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(loop.ready.wait(), 10)
        # Past the short fetch: waiting on the long request, an hour long.
        await eventually(lambda: waits_at_least(3600, requests), what="the long request")
        stop.set()
        # The hour-long request would hold it an hour: ending within the guard is the stop
        # waking it.
        await asyncio.wait_for(task, 60)
    finally:
        await pulls.unsubscribe()


async def test_with_overlap_a_message_is_handled_while_an_earlier_one_still_is(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    slow, quick = requested(), requested()
    entered: list[uuid.UUID] = []
    release = asyncio.Event()

    async def handle(event: JobRequested) -> None:
        entered.append(event.job_id)
        if event.job_id == slow.job_id:
            await release.wait()

    await publisher.publish(slow)
    async with running(
        nats_client, jobs_stream_ready, subjects, {"requested": handle}, overlap=True
    ):
        await eventually(lambda: entered == [slow.job_id])
        await publisher.publish(quick)
        # Fetched and handled while the first message's handler still waits.
        await eventually(lambda: entered == [slow.job_id, quick.job_id])
        release.set()

        async def acked() -> bool:
            return await consumer_state(nats_client, jobs_stream_ready) == (0, 0, 0)

        await eventually(acked, what="both messages are acked")


async def test_with_overlap_handlers_are_entered_in_stream_order(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    events = [requested() for _ in range(30)]
    entered: list[uuid.UUID] = []

    async def handle(event: JobRequested) -> None:
        entered.append(event.job_id)
        await asyncio.sleep(0.01)  # still in hand when the next fetch's messages arrive

    for event in events[:10]:
        await publisher.publish(event)
    async with running(
        nats_client,
        jobs_stream_ready,
        subjects,
        {"requested": handle},
        overlap=True,
        batch=4,
        max_in_hand=6,
    ):
        for event in events[10:]:
            await publisher.publish(event)
        await eventually(lambda: len(entered) == len(events))
    assert entered == [e.job_id for e in events]


async def test_with_overlap_stopping_finishes_the_messages_in_hand(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    release, entered = asyncio.Event(), asyncio.Event()
    done: list[uuid.UUID] = []

    async def handle(event: JobRequested) -> None:
        entered.set()
        await release.wait()
        done.append(event.job_id)

    event = requested()
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)
    loop = ConsumerLoop(
        nats_client.jetstream(),
        stream=jobs_stream_ready.name,
        spec=spec(subjects),
        subjects=subjects,
        handlers={"requested": handle},
        fetch_timeout_s=0.2,
        overlap=True,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.wait_for(entered.wait(), 10)
    stop.set()
    # A pause, and no condition to wait on instead: a loop that wrongly ended would show only
    # as being done. Reaching its end after the stop takes a few loop turns and no I/O, far
    # less than this.
    await asyncio.sleep(0.3)
    assert not task.done()  # still finishing the message in hand
    release.set()
    await asyncio.wait_for(task, 10)
    assert done == [event.job_id]

    async def acked() -> bool:
        return await consumer_state(nats_client, jobs_stream_ready) == (0, 0, 0)

    await eventually(acked, what="the message in hand is acked")


async def test_a_handler_working_past_ack_wait_keeps_its_message_from_other_replicas(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    # Two replicas of one durable. Without the loop's "still working" news, JetStream hands the
    # message to the other replica once ack_wait (1 s) passed, while the first still holds it
    # (an ai-runner holding a created prediction's id until NATS answers again).
    started: list[float] = []
    release = asyncio.Event()

    async def slow(event: JobRequested) -> None:
        started.append(time.monotonic())
        await release.wait()

    await EventPublisher(nats_client.jetstream(), subjects).publish(requested())
    handlers: dict[str, Handler] = {"requested": slow}
    async with (
        running(nats_client, jobs_stream_ready, subjects, handlers),
        running(nats_client, jobs_stream_ready, subjects, handlers),
    ):
        await eventually(lambda: bool(started))

        async def held_for_three_ack_waits() -> bool:
            # Handed out again would show at once as a second start or a redelivery count.
            state = await consumer_state(nats_client, jobs_stream_ready)
            assert len(started) == 1, started
            assert state == (0, 1, 0), state
            return time.monotonic() - started[0] > 3.0

        await eventually(held_for_three_ack_waits, within=15)
        release.set()

        async def acked() -> bool:
            return await consumer_state(nats_client, jobs_stream_ready) == (0, 0, 0)

        await eventually(acked, what="the message is acked")
    assert len(started) == 1
