"""The output log against real JetStream: exactly once per offset whatever the writers offer
(overlaps, replays from 0, racing writers, long texts), gaps refused, and `Unavailable` when
NATS is away."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from jobs_proto.output import OutputGap, decode_chunk, output_stream
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import ensure_stream
from jobs_runtime.errors import Unavailable
from jobs_runtime.output import OutputCursor, OutputLog


@pytest.fixture
async def output_log(
    nats_client: NATS, subjects: Subjects, stream_spec: StreamSpec
) -> AsyncIterator[OutputLog]:
    js = nats_client.jetstream()
    spec = output_stream(subjects, stream_spec.name, longest_deadline_s=600)
    await ensure_stream(js, spec)
    yield OutputLog(js, spec.name, subjects)
    await js.delete_stream(spec.name)


async def stored_text(nats_client: NATS, subjects: Subjects, stream: str, job: uuid.UUID) -> str:
    """Every chunk of the job's prediction `p1`, in order, checked to follow on each other."""
    js = nats_client.jetstream()
    sub = await js.subscribe(subjects.output(job, "p1"), ordered_consumer=True, stream=stream)
    text, end = "", 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except TimeoutError:
                return text
            chunk = decode_chunk(msg.data)
            assert chunk.offset == end, "chunks must follow on each other"
            text += chunk.text
            end = chunk.end
    finally:
        await sub.unsubscribe()


async def test_overlapping_offers_store_each_character_once(
    output_log: OutputLog, nats_client: NATS, subjects: Subjects, stream_spec: StreamSpec
) -> None:
    job = uuid.uuid4()
    assert await output_log.cursor(job, "p1") == OutputCursor()
    cursor = await output_log.offer(job, "p1", 0, "Hello, ")
    assert cursor.end == 7
    # A reconnect replays from 0; an output webhook carries everything so far.
    cursor = await output_log.offer(job, "p1", 0, "Hello, wor", cursor)
    cursor = await output_log.offer(job, "p1", 0, "Hello, world", None)
    same = await output_log.offer(job, "p1", 3, "lo", cursor)
    assert same == cursor
    assert cursor.end == 12
    assert await output_log.cursor(job, "p1") == cursor
    assert (
        await stored_text(nats_client, subjects, f"{stream_spec.name}_OUTPUT", job)
        == "Hello, world"
    )


async def test_code_points_not_bytes(output_log: OutputLog) -> None:
    job = uuid.uuid4()
    cursor = await output_log.offer(job, "p1", 0, "héllo 🌍")
    assert cursor.end == 7
    cursor = await output_log.offer(job, "p1", 6, "🌍!", cursor)
    assert cursor.end == 8


async def test_a_gap_is_refused(output_log: OutputLog) -> None:
    job = uuid.uuid4()
    with pytest.raises(OutputGap):
        await output_log.offer(job, "p1", 5, "late")
    assert (await output_log.cursor(job, "p1")).end == 0


async def test_a_stale_cursor_loses_the_race_and_appends_only_what_is_missing(
    output_log: OutputLog, nats_client: NATS, subjects: Subjects, stream_spec: StreamSpec
) -> None:
    job = uuid.uuid4()
    stale = await output_log.offer(job, "p1", 0, "one ")
    await output_log.offer(job, "p1", 0, "one two ")  # another writer, ahead
    cursor = await output_log.offer(job, "p1", 0, "one two three", stale)
    assert cursor.end == len("one two three")
    assert (
        await stored_text(nats_client, subjects, f"{stream_spec.name}_OUTPUT", job)
        == "one two three"
    )


async def test_racing_writers_never_duplicate(
    output_log: OutputLog, nats_client: NATS, subjects: Subjects, stream_spec: StreamSpec
) -> None:
    job = uuid.uuid4()
    words = [f"w{i} " for i in range(60)]

    async def writer() -> None:
        cursor = None
        for n in range(1, len(words) + 1):
            cursor = await output_log.offer(job, "p1", 0, "".join(words[:n]), cursor)

    await asyncio.gather(writer(), writer(), writer())
    assert await stored_text(nats_client, subjects, f"{stream_spec.name}_OUTPUT", job) == "".join(
        words
    )


async def test_a_long_text_is_split_into_chunks(
    output_log: OutputLog, nats_client: NATS, subjects: Subjects, stream_spec: StreamSpec
) -> None:
    job = uuid.uuid4()
    text = "x" * 40_000 + "é" * 10_000
    cursor = await output_log.offer(job, "p1", 0, text)
    assert cursor.end == len(text)
    assert cursor.seq >= 3
    assert await stored_text(nats_client, subjects, f"{stream_spec.name}_OUTPUT", job) == text


async def test_unavailable_when_nats_is_away(
    nats_url: str, subjects: Subjects, stream_spec: StreamSpec
) -> None:
    import nats

    nc = await nats.connect(nats_url)
    log = OutputLog(nc.jetstream(), f"{stream_spec.name}_OUTPUT", subjects, timeout_s=0.5)
    await nc.close()
    with pytest.raises(Unavailable):
        await log.offer(uuid.uuid4(), "p1", 0, "text")
