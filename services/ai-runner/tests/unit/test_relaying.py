"""The relay's reader over fake streams and a fake log: every character once, in order,
whatever the connections replay, cut or fail; appends coalesce while one is in flight; progress
of the text so far; a stream lost for good replaced by reading its prediction."""

import asyncio
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ai_runner.fallback import FallbackPolicy
from ai_runner.handlers.progress import ProgressBoard
from ai_runner.handlers.relaying import Appends, Relay
from ai_runner.ports import (
    LogEnd,
    NoObserver,
    PermanentRejection,
    StreamDone,
    StreamEvent,
    StreamGone,
    StreamIdle,
    StreamText,
)
from ai_runner.reconnect import ReconnectPolicy
from jobs_proto.api import JobProgress
from jobs_proto.events import JobSubmitted
from jobs_proto.output import beyond
from jobs_proto.replicate import ReplicatePrediction
from jobs_proto.status import PredictionStatus
from jobs_runtime.errors import Unavailable

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class FakeLog:
    """A log that keeps text once per offset, as the real one does; `gate` holds appends."""

    text: str = ""
    appends: list[tuple[int, str]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    fail_next: bool = False

    async def end(self, job_id: uuid.UUID, prediction_id: str) -> LogEnd:
        return LogEnd(len(self.text), len(self.appends))

    async def offer(
        self, job_id: uuid.UUID, prediction_id: str, offset: int, text: str, known: LogEnd
    ) -> LogEnd:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise Unavailable("NATS away")
        missing = beyond(offset, text, len(self.text))
        if missing:
            self.appends.append((len(self.text), missing))
            self.text += missing
        return LogEnd(len(self.text), len(self.appends))


@dataclass
class Script:
    """Connections, each a list of events, then how it ends: None (cut), or an exception."""

    connections: list[tuple[list[StreamEvent], BaseException | None]]
    opened: int = 0

    async def events(self, url: str) -> AsyncGenerator[StreamEvent, None]:
        events, ending = self.connections[min(self.opened, len(self.connections) - 1)]
        self.opened += 1
        for event in events:
            yield event
        if ending is not None:
            raise ending


def submitted() -> JobSubmitted:
    return JobSubmitted(
        job_id=uuid.uuid4(), occurred_at=NOW, prediction_id="p1", stream_url="http://s/p1"
    )


async def no_sleep(_: float) -> None:
    return None


def relay(
    source: Script,
    log: FakeLog,
    max_failures: int = 3,
    progress: ProgressBoard | None = None,
    reader: "Reads | None" = None,
    observer: NoObserver | None = None,
) -> Relay:
    return Relay(
        source=source,
        log=log,
        policy=ReconnectPolicy(max_failures=max_failures, max_age_s=3600.0),
        now=lambda: NOW,
        sleep=no_sleep,
        jitter=lambda: 0.0,
        progress=progress,
        reader=reader,
        fallback=FallbackPolicy(max_failures=3),
        observer=observer or NoObserver(),
    )


@dataclass
class Sink:
    sent: list[JobProgress] = field(default_factory=list)

    async def send(self, progress: JobProgress) -> None:
        self.sent.append(progress)


class Ends(NoObserver):
    def __init__(self) -> None:
        self.fallbacks: list[str] = []

    def fallback_ended(self, outcome: str) -> None:
        self.fallbacks.append(outcome)


@dataclass
class Reads:
    """Replicate's answers to reads of the prediction, in turn (the last one repeated)."""

    answers: list[ReplicatePrediction | Exception]
    reads: int = 0

    async def get(self, prediction_id: str) -> ReplicatePrediction:
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def read(status: PredictionStatus, *chunks: str) -> ReplicatePrediction:
    return ReplicatePrediction(id="p1", status=status, output=list(chunks) or None)


def texts(*parts: str) -> list[StreamEvent]:
    return [StreamText(p) for p in parts]


async def test_replays_after_cuts_store_each_character_once() -> None:
    log = FakeLog()
    source = Script(
        [
            (texts("Hél", "lo "), None),  # cut
            (texts("Hél", "lo wor"), Unavailable("reset")),
            (texts("Héllo wor", "ld\n", "\u2028end"), None),
            ([*texts("Héllo world\n\u2028end"), StreamDone()], None),
        ]
    )
    assert await relay(source, log).follow(submitted()) == "done"
    assert log.text == "Héllo world\n\u2028end"
    ends = [offset + len(text) for offset, text in log.appends]
    assert [offset for offset, _ in log.appends] == [0, *ends[:-1]]


async def test_a_restarted_relay_skips_what_the_log_holds() -> None:
    log = FakeLog(text="Hello ")
    source = Script([([*texts("Hello ", "world"), StreamDone()], None)])
    assert await relay(source, log).follow(submitted()) == "done"
    assert log.appends == [(6, "world")]


async def test_a_canceled_prediction_ends_the_reader() -> None:
    source = Script([([*texts("Hi"), StreamDone("canceled")], None)])
    assert await relay(source, FakeLog()).follow(submitted()) == "canceled"


async def test_a_gone_stream_is_given_up_at_once() -> None:
    source = Script([([], StreamGone("404"))])
    assert await relay(source, FakeLog()).follow(submitted()) == "gone"
    assert source.opened == 1


async def test_connections_failing_in_a_row_give_up_but_idle_ones_do_not_count() -> None:
    source = Script([([], StreamIdle("408"))] * 5 + [([], Unavailable("refused"))])
    assert await relay(source, FakeLog(), max_failures=3).follow(submitted()) == "gave_up"
    assert source.opened == 5 + 3


async def test_a_failed_write_reconnects_and_loses_nothing() -> None:
    log = FakeLog(fail_next=True)
    source = Script([([*texts("abc", "def"), StreamDone()], None)])
    assert await relay(source, log).follow(submitted()) == "done"
    assert log.text == "abcdef"
    assert source.opened == 2


async def test_text_arriving_during_an_append_goes_in_one_next_append() -> None:
    gate = asyncio.Event()
    log = FakeLog(gate=gate)
    appends = Appends(log, uuid.uuid4(), "p1", LogEnd(), NoObserver())
    await appends.add(0, "a")  # a lone token goes at once
    for offset, token in enumerate("bcde", start=1):
        await appends.add(offset, token)
    gate.set()
    assert await appends.flush() == LogEnd(5, 2)
    assert log.appends == [(0, "a"), (1, "bcde")]


async def test_the_last_progress_carries_the_whole_text_when_the_stream_is_done() -> None:
    sink = Sink()
    board = ProgressBoard(sink, NoObserver())
    source = Script([(texts("Hel", "lo"), None), ([*texts("Hello", " world"), StreamDone()], None)])
    event = submitted()
    assert await relay(source, FakeLog(), progress=board).follow(event) == "done"
    assert sink.sent == [
        JobProgress(job_id=event.job_id, output="Hello world", seq=11, prediction_id="p1")
    ]
    assert len(board) == 0


async def test_a_gone_stream_is_replaced_by_reading_the_prediction_until_it_ends() -> None:
    log, sink, observer = FakeLog(), Sink(), Ends()
    board = ProgressBoard(sink, observer)
    source = Script([(texts("Hel"), StreamGone("404"))])
    reader = Reads(
        [
            read("processing", "Hel", "lo"),
            Unavailable("Replicate away"),
            read("processing", "Hel", "lo", " wor"),
            read("succeeded", "Hel", "lo", " wor", "ld"),
            read("succeeded", "never read"),
        ]
    )
    worker = relay(source, log, progress=board, reader=reader, observer=observer)
    assert await worker.follow(submitted()) == "gone"
    assert log.text == "Hello world"
    assert reader.reads == 4
    assert observer.fallbacks == ["ended"]
    assert [p.output for p in sink.sent] == ["Hello world"]


async def test_a_stream_given_up_is_read_until_replicate_no_longer_knows_the_prediction() -> None:
    log, observer = FakeLog(), Ends()
    source = Script([([], Unavailable("refused"))])
    reader = Reads([read("processing", "abc"), PermanentRejection("404")])
    worker = relay(source, log, max_failures=2, reader=reader, observer=observer)
    assert await worker.follow(submitted()) == "gave_up"
    assert log.text == "abc"
    assert observer.fallbacks == ["gone"]


async def test_reads_failing_in_a_row_stop_the_fallback() -> None:
    observer = Ends()
    reader = Reads([Unavailable("Replicate away")])
    worker = relay(Script([([], StreamGone("410"))]), FakeLog(), reader=reader, observer=observer)
    assert await worker.follow(submitted()) == "gone"
    assert reader.reads == 3
    assert observer.fallbacks == ["gave_up"]


async def test_a_prediction_without_a_stream_url_is_read_instead() -> None:
    log, observer = FakeLog(), Ends()
    event = JobSubmitted(job_id=uuid.uuid4(), occurred_at=NOW, prediction_id="p1")
    reader = Reads([read("processing", "ab"), read("succeeded", "ab", "c")])
    worker = relay(Script([]), log, reader=reader, observer=observer)
    assert await worker.follow(event) == "no_stream"
    assert log.text == "abc"
    assert observer.fallbacks == ["ended"]
