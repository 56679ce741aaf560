"""The consumer loop rides out a NATS restart: it reconnects and goes on where it was."""

import asyncio
import uuid
from datetime import UTC, datetime

from jobs_proto.events import JobRequested
from jobs_proto.stream import ConsumerSpec, jobs_stream
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, connect, ensure_stream
from jobs_runtime.consumer import ConsumerLoop
from jobs_testkit.servers import NatsServer
from jobs_testkit.waiting import eventually


def requested() -> JobRequested:
    return JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        user_id="u",
        job_type="title_generation",
        input={"topic": "tides"},
    )


async def publish_when_back(publisher: EventPublisher, event: JobRequested) -> None:
    """Publish `event` once JetStream takes it again (until then each try fails)."""

    async def published() -> bool:
        try:
            await publisher.publish(event)
        except Exception:
            return False
        return True

    await eventually(published, within=20, what="a publish after the restart")


async def test_consumer_survives_a_nats_restart(restartable_nats: NatsServer) -> None:
    subjects = Subjects("r.")
    nc = await connect(restartable_nats.url, "restart-test")
    try:
        js = nc.jetstream()
        stream = jobs_stream(subjects)
        await ensure_stream(js, stream)
        publisher = EventPublisher(js, subjects, timeout=1.0)
        seen: list[uuid.UUID] = []

        async def handle(event: JobRequested) -> None:
            seen.append(event.job_id)

        loop = ConsumerLoop(
            js,
            stream=stream.name,
            spec=ConsumerSpec(durable="worker", filter_subjects=(subjects.all_events,)),
            subjects=subjects,
            handlers={"requested": handle},
            fetch_timeout_s=0.2,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        before, after = requested(), requested()
        await publisher.publish(before)
        await eventually(lambda: before.job_id in seen)

        await asyncio.to_thread(restartable_nats.restart)
        await publish_when_back(publisher, after)
        await eventually(lambda: after.job_id in seen, within=20)

        stop.set()
        await asyncio.wait_for(task, 10)
        assert seen == [before.job_id, after.job_id]
    finally:
        await nc.close()
