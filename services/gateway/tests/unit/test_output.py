"""`/output` without I/O: the offset a client names (query or `Last-Event-ID`), the merge of
the log's catch-up with the hub's live chunks by offset (nothing repeated, nothing skipped, a gap
sends the stream back to the log), and the end from the job's stored output."""

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from gateway.hub import Hub, OutputAppended, StreamPolicy
from gateway.output import Delivered, job_output, parse_offset
from gateway.validation import InvalidRequest
from jobs_proto.api import JobChanged, JobView
from jobs_proto.events import JobError
from jobs_proto.output import OutputChunk, OutputGap
from jobs_proto.status import JobStatus

T0 = datetime(2030, 1, 2, tzinfo=UTC)
POLICY = StreamPolicy(keepalive_s=0.05, queue_size=64, retry_ms=700)
JOB = uuid.UUID(int=7)


def view(
    version: int,
    status: JobStatus = "processing",
    output: str | None = None,
    prediction_id: str | None = "p1",
    error: JobError | None = None,
) -> JobView:
    return JobView(
        job_id=JOB,
        type="script_generation",
        status=status,
        version=version,
        input={"topic": "x"},
        output=output,
        error=error,
        prediction_id=prediction_id,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=version),
        completed_at=None,
    )


class FakeLog:
    """The output log of one prediction, as `NatsOutputLog.read` answers it."""

    def __init__(self, *chunks: OutputChunk) -> None:
        self.chunks = list(chunks)
        self.reads: list[int] = []

    def append(self, text: str) -> OutputChunk:
        offset = self.chunks[-1].end if self.chunks else 0
        chunk = OutputChunk(offset=offset, text=text)
        self.chunks.append(chunk)
        return chunk

    async def read(self, job_id: uuid.UUID, prediction_id: str, held: int) -> Sequence[OutputChunk]:
        assert (job_id, prediction_id) == (JOB, "p1")
        self.reads.append(held)
        return [c for c in self.chunks if c.end > held]


async def no_reload(job_id: uuid.UUID) -> JobView | None:
    raise AssertionError("not expected to read the job again")


def parse(raw: bytes) -> tuple[str, str | None, dict[str, object]]:
    """One event's name, id and data."""
    fields = dict(line.split(": ", 1) for line in raw.decode().strip().split("\n"))
    return fields["event"], fields.get("id"), msgspec.json.decode(fields["data"])


async def until_done(chunks: AsyncIterator[bytes]) -> list[tuple[str, str | None, object]]:
    events = []
    async for raw in chunks:
        if raw.startswith(b":"):
            continue
        name, event_id, data = parse(raw)
        events.append((name, event_id, data.get("text", data)))
    return events


# --- the offset -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "header", "expected"),
    [
        ([], None, 0),
        (["12"], None, 12),
        ([], "7", 7),
        (["12"], "7", 7),  # a reconnect sends the URL's offset again, with the newer id
        ([], " 30 ", 30),
        (["0"], None, 0),
        (["9" * 40], None, 10**15),  # past any text, not a huge integer
    ],
)
def test_the_offset_is_the_last_event_id_else_the_query(
    query: list[str], header: str | None, expected: int
) -> None:
    assert parse_offset(query, header) == expected


@pytest.mark.parametrize(
    ("query", "header", "named"),
    [
        (["-1"], None, ["offset"]),
        (["1.5"], None, ["offset"]),
        ([""], None, ["offset"]),
        (["٣"], None, ["offset"]),  # a digit to `str.isdigit`, not to the contract
        (["1", "2"], None, ["offset"]),
        ([], "abc", ["Last-Event-ID"]),
        ([], "", ["Last-Event-ID"]),
        (["x"], "y", ["offset", "Last-Event-ID"]),
    ],
)
def test_an_offset_that_is_no_non_negative_integer_is_refused_by_name(
    query: list[str], header: str | None, named: list[str]
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_offset(query, header)
    assert [e.parameter for e in refused.value.errors] == named


# --- the merge --------------------------------------------------------------------------------


def test_delivered_drops_what_is_held_and_tells_a_gap() -> None:
    delivered = Delivered(3)
    assert delivered.take(0, "ab") == ""
    assert delivered.take(0, "abcdé") == "dé"
    assert delivered.held == 5
    assert delivered.take(5, "f") == "f"
    with pytest.raises(OutputGap):
        delivered.take(9, "z")
    assert delivered.held == 6
    assert delivered.rest_of("abcdéfgh") == "gh"
    assert delivered.rest_of("abc") == ""


# --- the stream -------------------------------------------------------------------------------


async def test_a_running_job_catches_up_from_the_log_then_live_chunks_merge_by_offset() -> None:
    hub = Hub(POLICY)
    log = FakeLog(OutputChunk(offset=0, text="Once "), OutputChunk(offset=5, text="upon"))
    subscription = hub.open_output(JOB)
    # Arrived while the log was read: already held, so dropped.
    hub.publish_output(OutputAppended(JOB, "p1", log.chunks[1]))
    chunks = job_output(view(2), 0, subscription, log, no_reload, POLICY)
    assert parse(await anext(chunks))[:2] == ("output", "5")
    assert parse(await anext(chunks))[:2] == ("output", "9")
    hub.publish_output(OutputAppended(JOB, "p1", log.append(" a tïme")))
    # Another prediction's text (an orphan of the same job) never mixes in.
    hub.publish_output(OutputAppended(JOB, "p0", OutputChunk(offset=16, text="junk")))
    hub.publish_change(JobChanged(user_id="u", job=view(3, "succeeded", "Once upon a tïme.")))
    assert await until_done(chunks) == [
        ("output", "16", " a tïme"),
        ("output", "17", "."),
        ("done", None, {"status": "succeeded", "error": None}),
    ]


async def test_a_gap_reads_the_log_again_from_what_is_held() -> None:
    hub = Hub(POLICY)
    log = FakeLog(OutputChunk(offset=0, text="ab"))
    subscription = hub.open_output(JOB)
    chunks = job_output(view(2), 0, subscription, log, no_reload, POLICY)
    assert parse(await anext(chunks))[2] == {"text": "ab"}
    log.append("cd")  # its live copy was lost
    hub.publish_output(OutputAppended(JOB, "p1", log.append("ef")))
    assert parse(await anext(chunks))[:2] == ("output", "4")
    assert parse(await anext(chunks))[:2] == ("output", "6")
    assert log.reads == [0, 2]


async def test_a_resumed_stream_starts_mid_chunk_and_waits_past_the_end() -> None:
    hub = Hub(POLICY)
    log = FakeLog(OutputChunk(offset=0, text="hello world"))
    chunks = job_output(view(2), 6, hub.open_output(JOB), log, no_reload, POLICY)
    assert parse(await anext(chunks))[1:] == ("11", {"text": "world"})

    ahead = job_output(view(2), 14, hub.open_output(JOB), log, no_reload, POLICY)
    assert await anext(ahead) == b": keepalive\n\n"  # waits for the text to get there
    hub.publish_output(OutputAppended(JOB, "p1", log.append("!!!!!")))
    assert parse(await anext(ahead))[1:] == ("16", {"text": "!!"})


async def test_a_pending_job_waits_for_its_prediction_then_reads_the_log() -> None:
    hub = Hub(POLICY)
    log = FakeLog(OutputChunk(offset=0, text="early "))
    subscription = hub.open_output(JOB)
    chunks = job_output(
        view(1, "pending", prediction_id=None), 0, subscription, log, no_reload, POLICY
    )
    assert await anext(chunks) == b": keepalive\n\n"
    hub.publish_change(JobChanged(user_id="u", job=view(2)))
    assert parse(await anext(chunks))[1:] == ("6", {"text": "early "})


async def test_a_finished_job_sends_its_stored_output_from_the_offset_then_done() -> None:
    hub = Hub(POLICY)
    log = FakeLog()
    finished = view(5, "succeeded", "héllo")
    assert await until_done(
        job_output(finished, 0, hub.open_output(JOB), log, no_reload, POLICY)
    ) == [
        ("output", "5", "héllo"),
        ("done", None, {"status": "succeeded", "error": None}),
    ]
    assert await until_done(
        job_output(finished, 2, hub.open_output(JOB), log, no_reload, POLICY)
    ) == [
        ("output", "5", "llo"),
        ("done", None, {"status": "succeeded", "error": None}),
    ]
    # Past the end: `done` at once.
    assert await until_done(
        job_output(finished, 99, hub.open_output(JOB), log, no_reload, POLICY)
    ) == [
        ("done", None, {"status": "succeeded", "error": None}),
    ]
    failed = view(4, "failed", None, error=JobError(code="prediction_failed", message="boom"))
    assert await until_done(
        job_output(failed, 0, hub.open_output(JOB), log, no_reload, POLICY)
    ) == [
        (
            "done",
            None,
            {"status": "failed", "error": {"code": "prediction_failed", "message": "boom"}},
        ),
    ]
    assert log.reads == []


async def test_an_end_announced_without_its_output_reads_the_job_again() -> None:
    hub = Hub(POLICY)
    log = FakeLog(OutputChunk(offset=0, text="ab"))

    async def reload(job_id: uuid.UUID) -> JobView | None:
        return view(3, "succeeded", "abc")

    subscription = hub.open_output(JOB)
    chunks = job_output(view(2), 0, subscription, log, reload, POLICY)
    assert parse(await anext(chunks))[2] == {"text": "ab"}
    omitted = JobChanged(user_id="u", job=view(3, "succeeded"), output_omitted=True)
    hub.publish_change(omitted)
    assert await until_done(chunks) == [
        ("output", "3", "c"),
        ("done", None, {"status": "succeeded", "error": None}),
    ]


async def test_stopping_the_gateway_ends_the_stream_with_a_retry_hint() -> None:
    hub = Hub(POLICY)
    chunks = job_output(view(2), 0, hub.open_output(JOB), FakeLog(), no_reload, POLICY)
    hub.stop()
    assert await anext(chunks) == b"retry: 700\n: reconnect, with Last-Event-ID\n\n"
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)


def test_output_subscribers_get_changes_and_chunks_but_no_progress() -> None:
    hub = Hub(POLICY)
    events, output = hub.open_job(JOB), hub.open_output(JOB)
    assert hub.watches(JOB, "nobody")
    assert hub.watches_output(JOB)
    hub.publish_output(OutputAppended(JOB, "p1", OutputChunk(offset=0, text="x")))
    hub.publish_change(JobChanged(user_id="u", job=view(2)))
    assert len(output.updates) == 2
    assert len(events.updates) == 1
    output.close()
    assert not hub.watches_output(JOB)
