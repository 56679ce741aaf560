"""The relay's progress: each stream's text so far, sent once per tick only when it grew, with
a growing `seq`; capped per stream; a failed send is counted and sent again; and the decision
rules of reading a prediction whose stream was lost."""

import uuid
from dataclasses import dataclass, field

import pytest

from ai_runner.fallback import ENDED, GONE, FallbackPolicy, PollAgain, PollStop, ReadPace
from ai_runner.handlers.progress import ProgressBoard, ProgressFeed
from ai_runner.ports import NoObserver
from ai_runner.reconnect import GAVE_UP, JOB_OVER
from jobs_proto.api import JobProgress
from jobs_runtime.errors import Unavailable

JOB = uuid.UUID("6b1d8a8e-0f0e-4a43-9d59-0c5b7e6d1a21")


@dataclass
class FakeSink:
    sent: list[JobProgress] = field(default_factory=list)
    down: bool = False

    async def send(self, progress: JobProgress) -> None:
        if self.down:
            raise Unavailable("NATS away")
        self.sent.append(progress)


class Sends(NoObserver):
    def __init__(self) -> None:
        self.outcomes: list[bool] = []

    def progress_sent(self, ok: bool) -> None:
        self.outcomes.append(ok)


def test_a_feed_keeps_each_character_once_whatever_the_replays() -> None:
    feed = ProgressFeed(JOB, "p1", max_bytes=1024)
    feed.add(0, "Hél")
    feed.add(3, "lo")
    feed.add(0, "Héllo wor")  # a new connection replays from 0
    feed.add(0, "Hé")
    taken = feed.take()
    assert taken == JobProgress(job_id=JOB, output="Héllo wor", seq=9, prediction_id="p1")
    assert feed.take() is None, "nothing new, nothing sent"
    feed.add(9, "ld")
    assert feed.take() == JobProgress(job_id=JOB, output="Héllo world", seq=11, prediction_id="p1")


def test_past_the_cap_a_feed_stops_for_good() -> None:
    feed = ProgressFeed(JOB, "p1", max_bytes=8)
    feed.add(0, "abcdef")
    assert feed.take() is not None
    feed.add(6, "éé")  # 4 more bytes: over 8
    assert feed.capped
    feed.add(8, "x")
    assert feed.take() is None


async def test_a_tick_sends_only_the_feeds_that_grew() -> None:
    sink, observer = FakeSink(), Sends()
    board = ProgressBoard(sink, observer)
    quiet, busy = board.open(JOB, "p0"), board.open(uuid.uuid4(), "p1")
    busy.add(0, "Once")
    await board.tick()
    busy.add(4, " upon")
    await board.tick()
    await board.tick()
    assert [(p.prediction_id, p.output, p.seq) for p in sink.sent] == [
        ("p1", "Once", 4),
        ("p1", "Once upon", 9),
    ]
    assert observer.outcomes == [True, True]
    board.close(quiet)
    assert len(board) == 1


async def test_finish_sends_the_last_text_once_and_forgets_the_feed() -> None:
    sink = FakeSink()
    board = ProgressBoard(sink, NoObserver())
    feed = board.open(JOB, "p1")
    feed.add(0, "a")
    await board.tick()
    feed.add(1, "b")
    await board.finish(feed)
    await board.finish(feed)
    assert [p.output for p in sink.sent] == ["a", "ab"]
    assert len(board) == 0


async def test_a_failed_send_is_counted_and_the_text_sent_at_the_next_tick() -> None:
    sink, observer = FakeSink(down=True), Sends()
    board = ProgressBoard(sink, observer)
    board.open(JOB, "p1").add(0, "abc")
    await board.tick()
    await board.tick()
    sink.down = False
    await board.tick()
    assert [p.output for p in sink.sent] == ["abc"]
    assert observer.outcomes == [False, False, True]


POLICY = FallbackPolicy(every_s=1.0, max_failures=3, max_age_s=100.0)


@pytest.mark.parametrize(
    ("final", "unknown", "failures", "age_s", "expected"),
    [
        (True, False, 0, 1.0, PollStop(ENDED)),
        (True, False, 0, 500.0, PollStop(ENDED)),  # its whole text was offered first
        (False, True, 0, 1.0, PollStop(GONE)),
        (False, False, 0, 101.0, PollStop(JOB_OVER)),
        (False, False, 3, 1.0, PollStop(GAVE_UP)),
        (False, False, 2, 1.0, PollAgain(0.75)),
        (False, False, 0, 1.0, PollAgain(0.75)),
    ],
)
def test_reading_a_lost_streams_prediction_goes_on_while_it_runs(
    final: bool, unknown: bool, failures: int, age_s: float, expected: PollAgain | PollStop
) -> None:
    step = POLICY.next_step(
        final=final, unknown=unknown, failures=failures, age_s=age_s, jitter=0.0
    )
    assert step == expected


def test_jitter_keeps_reads_between_three_quarters_and_one_and_a_quarter_of_the_period() -> None:
    low = POLICY.next_step(final=False, unknown=False, failures=0, age_s=0, jitter=0.0)
    high = POLICY.next_step(final=False, unknown=False, failures=0, age_s=0, jitter=0.999)
    assert isinstance(low, PollAgain)
    assert isinstance(high, PollAgain)
    assert 0.75 <= low.delay_s < high.delay_s < 1.25


def test_reads_are_paced_for_the_whole_replica() -> None:
    now = [10.0]
    pace = ReadPace(per_s=4.0, clock=lambda: now[0])
    assert [pace.delay() for _ in range(3)] == [0.0, 0.25, 0.5]
    now[0] = 20.0
    assert pace.delay() == 0.0
