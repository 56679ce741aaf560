"""Token buckets by key: burst, refill, independence of keys, the LRU bound and `Retry-After`."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobs_runtime.buckets import TokenBuckets, retry_after_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_refill_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 3, monotonic=clock)
    assert [buckets.take("ada") for _ in range(3)] == [None, None, None]
    assert buckets.take("ada") == pytest.approx(0.5)
    assert buckets.take("grace") is None  # another key has its own bucket
    clock.now += 0.5
    assert buckets.take("ada") is None
    assert buckets.take("ada") == pytest.approx(0.5)


def test_rate_zero_never_limits() -> None:
    buckets = TokenBuckets(0, 1)
    assert all(buckets.take("ada") is None for _ in range(1000))


def test_at_most_max_keys_are_kept_and_an_evicted_key_comes_back_full() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 1, max_keys=2, monotonic=clock)
    assert buckets.take("a") is None
    assert buckets.take("a") is not None
    buckets.take("b")
    buckets.take("c")  # pushes out "a", the least recently used
    assert len(buckets) == 2
    assert buckets.take("a") is None


@pytest.mark.parametrize(("rate", "burst", "keys"), [(-1, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: float, keys: int) -> None:
    with pytest.raises(ValueError, match="rate must be"):
        TokenBuckets(rate, burst, max_keys=keys)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_retry_after_is_a_whole_second_or_more(wait_s: float) -> None:
    after = retry_after_s(wait_s)
    assert (after >= 1 and after >= wait_s and after - wait_s < 1) or after == 1
