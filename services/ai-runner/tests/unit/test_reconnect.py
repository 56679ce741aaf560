"""When the relay connects again and when it gives up, as a table."""

import pytest

from ai_runner.reconnect import GAVE_UP, JOB_OVER, GiveUp, Reconnect, ReconnectPolicy

POLICY = ReconnectPolicy(base_s=1.0, cap_s=8.0, max_failures=4, max_age_s=100.0)


@pytest.mark.parametrize(
    ("failures", "got_events", "idle", "after"),
    [
        (3, True, False, 0),  # a connection that brought events worked: the count clears
        (3, False, True, 3),  # a 408: alive but quiet, not a failure
        (3, False, False, 4),  # refused, reset, a 5xx before any event
        (0, False, False, 1),
    ],
)
def test_failures_in_a_row(failures: int, got_events: bool, idle: bool, after: int) -> None:
    assert POLICY.failures_after(failures, got_events=got_events, idle=idle) == after


@pytest.mark.parametrize(
    ("failures", "age_s", "jitter", "step"),
    [
        (0, 1.0, 0.0, Reconnect(0.5)),  # a cut after text: soon
        (0, 1.0, 1.0, Reconnect(1.0)),
        (1, 1.0, 1.0, Reconnect(1.0)),
        (2, 1.0, 1.0, Reconnect(2.0)),
        (3, 1.0, 0.0, Reconnect(2.0)),
        (3, 1.0, 1.0, Reconnect(4.0)),
        (4, 1.0, 0.5, GiveUp(GAVE_UP)),
        (1, 100.5, 0.5, GiveUp(JOB_OVER)),
    ],
)
def test_next_step(failures: int, age_s: float, jitter: float, step: object) -> None:
    assert POLICY.next_step(failures, age_s=age_s, jitter=jitter) == step


def test_waits_are_capped() -> None:
    policy = ReconnectPolicy(base_s=1.0, cap_s=8.0, max_failures=100)
    step = policy.next_step(40, age_s=0.0, jitter=1.0)
    assert step == Reconnect(8.0)


def test_a_stream_past_its_age_is_over() -> None:
    assert POLICY.is_over(100.1)
    assert not POLICY.is_over(99.9)
