"""The abuse checks' pure parts: the runtime's token buckets set up per source, large-body slots,
and which address a request is counted against."""

from __future__ import annotations

import pytest

from webhook_ingest.limits import (
    MAX_TRACKED_SOURCES,
    IngressLimits,
    LargeBodySlots,
    client_source,
    source_rate_limiter,
)


def test_sources_share_the_settings_and_the_bound() -> None:
    now = [1000.0]
    limiter = source_rate_limiter(IngressLimits(rate_per_s=2.0, burst=3), lambda: now[0])
    assert [limiter.take("a") for _ in range(4)][3] == pytest.approx(0.5)
    assert limiter.take("b") is None  # a source of its own
    for n in range(MAX_TRACKED_SOURCES + 10):
        limiter.take(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(limiter) == MAX_TRACKED_SOURCES


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
