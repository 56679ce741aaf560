"""The abuse checks' pure parts: token buckets per source in a bounded LRU, large-body slots, and
which address a request is counted against."""

from __future__ import annotations

import pytest

from webhook_ingest.limits import (
    LargeBodySlots,
    SourceRateLimiter,
    client_source,
    retry_after_s,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    # Idle long enough to refill, never beyond the burst.
    clock.now += 60
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") is not None


def test_sources_have_their_own_buckets() -> None:
    limiter = SourceRateLimiter(1.0, 1, clock=Clock())
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    assert limiter.take("b") is None


def test_the_buckets_stay_bounded_and_forget_the_least_recent() -> None:
    limiter = SourceRateLimiter(1.0, 1, max_sources=100, clock=Clock())
    limiter.take("kept")
    for n in range(1000):
        limiter.take(f"10.0.{n // 256}.{n % 256}")
        limiter.take("kept")  # seen again each time: never the least recent
        assert len(limiter) <= 100
    assert limiter.take("kept") is not None  # still remembered as spent
    assert limiter.take("10.0.0.0") is None  # forgotten long ago: a fresh bucket


def test_rate_zero_means_no_limit() -> None:
    limiter = SourceRateLimiter(0, 1, clock=Clock())
    assert all(limiter.take("a") is None for _ in range(10_000))
    assert len(limiter) == 0


def test_retry_after_is_whole_seconds_never_zero() -> None:
    assert [retry_after_s(w) for w in (0.0, 0.01, 1.0, 1.2)] == [1, 1, 1, 2]


def test_slots_are_bounded_and_given_back() -> None:
    slots = LargeBodySlots(2)
    assert [slots.try_take("a") for _ in range(3)] == [True, True, False]
    slots.give_back("a")
    assert slots.try_take("b")
    assert slots.in_use == 2


def test_one_source_holds_at_most_its_share_of_the_slots() -> None:
    slots = LargeBodySlots(4, per_source=2)
    assert [slots.try_take("attacker") for _ in range(3)] == [True, True, False]
    assert [slots.try_take("replicate") for _ in range(3)] == [True, True, False]
    assert not slots.try_take("third")  # all four in use
    slots.give_back("attacker")
    assert slots.try_take("third")
    # A source that holds none gives none back; the last one given back is forgotten.
    slots.give_back("nobody")
    slots.give_back("third")
    slots.give_back("third")
    assert (slots.in_use, slots.of("third"), slots.of("attacker")) == (3, 0, 1)
    assert LargeBodySlots(1, per_source=2).per_source == 1


@pytest.mark.parametrize(
    ("peer", "forwarded", "hops", "source"),
    [
        ("10.0.0.9", "1.2.3.4", 0, "10.0.0.9"),  # not behind a proxy: the header is a lie
        ("10.0.0.9", None, 1, "10.0.0.9"),
        ("10.0.0.9", "1.2.3.4", 1, "1.2.3.4"),
        # The client wrote "6.6.6.6" itself; our one proxy appended the address it saw.
        ("10.0.0.9", "6.6.6.6, 1.2.3.4", 1, "1.2.3.4"),
        ("10.0.0.9", "6.6.6.6, 1.2.3.4, 10.1.1.1", 2, "1.2.3.4"),
        ("10.0.0.9", "1.2.3.4", 3, "1.2.3.4"),
        ("10.0.0.9", " , ", 1, "10.0.0.9"),
        (None, None, 0, "unknown"),
    ],
)
def test_the_source_honours_forwarded_for_only_behind_trusted_proxies(
    peer: str | None, forwarded: str | None, hops: int, source: str
) -> None:
    assert client_source(peer, forwarded, hops) == source
