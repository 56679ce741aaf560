"""Token buckets by key (a user, a webhook source), the one rate limiter of every service:
pure, per process, bounded in memory."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Monotonic = Callable[[], float]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """`burst` requests at once per key, refilled at `rate_per_s` (0: no limit).

    At most `max_keys` buckets are kept, least recently used out first; a key pushed out comes
    back with a full bucket, so the bound only ever errs on the lenient side (and costs an
    attacker as many keys as the bound holds).
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        if rate_per_s < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be >= 0, burst and max_keys >= 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._max_keys = max_keys
        self._now = monotonic
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def rate_per_s(self) -> float:
        return self._rate

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float | None:
        """Spend one token of `key`: None when allowed, else the seconds until one is back."""
        if self._rate == 0:
            return None
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self._burst, bucket.tokens + max(0.0, now - bucket.at) * self._rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self._rate


def retry_after_s(wait_s: float) -> int:
    """`Retry-After` in whole seconds, never 0 (a 0 invites an immediate retry)."""
    return max(1, math.ceil(wait_s))
