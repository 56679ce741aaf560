"""The endpoint's defences that run before any signature is checked: a token bucket per source
address (the runtime's `TokenBuckets`) and a cap on how many large bodies are held in memory at
once, in all and per source.

Pure and clock-injected, so tests drive time; the HTTP adapter applies them to requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from jobs_runtime.buckets import Monotonic, TokenBuckets

MIB: Final = 1024 * 1024
# A body over this size needs a large-body slot: Replicate's own webhooks are far smaller
# except for a final prediction with a long output.
LARGE_BODY_BYTES: Final = 1 * MIB
# Enough for every real sender; an attacker with more addresses than this only resets the
# buckets of the least recently seen ones, while memory stays bounded.
MAX_TRACKED_SOURCES: Final = 10_000


@dataclass(frozen=True, slots=True)
class IngressLimits:
    """The settings the abuse checks need (`WEBHOOK_RATE_PER_S` and friends)."""

    rate_per_s: float = 50.0  # 0: no rate limit
    burst: int = 100
    trusted_proxy_hops: int = 0
    max_large_bodies: int = 4
    max_large_bodies_per_source: int = 2
    read_timeout_s: float = 10.0


def source_rate_limiter(
    limits: IngressLimits, monotonic: Monotonic = time.monotonic
) -> TokenBuckets:
    """A token bucket per source address: `burst` requests at once, refilled at `rate_per_s`,
    the `MAX_TRACKED_SOURCES` most recently seen remembered."""
    return TokenBuckets(
        limits.rate_per_s, limits.burst, max_keys=MAX_TRACKED_SOURCES, monotonic=monotonic
    )


class LargeBodySlots:
    """At most `capacity` large bodies in progress, and at most `per_source` of one source, so
    that one address (an attacker's with a made-up fresh timestamp) cannot take every slot from
    Replicate's; taking a slot never waits. `per_source` 0 is `capacity`."""

    def __init__(self, capacity: int, per_source: int = 0) -> None:
        if capacity < 1 or per_source < 0:
            raise ValueError("capacity must be >= 1 and per_source >= 0")
        self.capacity = capacity
        self.per_source = min(per_source or capacity, capacity)
        self.in_use = 0
        # Only sources holding a slot: at most `capacity` entries.
        self._by_source: dict[str, int] = {}

    def of(self, source: str) -> int:
        return self._by_source.get(source, 0)

    def try_take(self, source: str) -> bool:
        held = self.of(source)
        if self.in_use >= self.capacity or held >= self.per_source:
            return False
        self._by_source[source] = held + 1
        self.in_use += 1
        return True

    def give_back(self, source: str) -> None:
        held = self.of(source)
        if held == 0:
            return
        if held == 1:
            del self._by_source[source]
        else:
            self._by_source[source] = held - 1
        self.in_use -= 1


def client_source(peer: str | None, forwarded_for: str | None, trusted_proxy_hops: int) -> str:
    """The address a request is rate-limited by.

    With `trusted_proxy_hops` = N > 0, each of our N proxies appended the address it saw to
    `X-Forwarded-For`, so the client is the N-th entry from the right; entries further left
    were written by the client itself and could be anything, so they are never used. With
    N = 0 the header is ignored: the TCP peer is the source.
    """
    if trusted_proxy_hops > 0 and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if hops:
            # Fewer entries than proxies: the leftmost is the closest to the client we know.
            return hops[max(0, len(hops) - trusted_proxy_hops)][:64]
    return peer or "unknown"
