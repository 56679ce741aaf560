"""The load's plan: a fifth of the jobs canceled by their user, at every kind of moment, and
each prediction's length within the size's range."""

from __future__ import annotations

import random
from collections import Counter

from jobs_chaos.load import plan
from jobs_chaos.scenarios import SIZES


def test_a_fifth_are_canceled_at_every_kind_of_moment() -> None:
    size = SIZES["full"]
    count = round(size.rate_per_s * size.load_s)
    jobs = plan(count, 2, "x", latency_s=size.latency_s, base_latency_s=2.0, rng=random.Random(7))
    assert count == 1000
    canceled = [j for j in jobs if j.cancel is not None]
    assert len(canceled) == 200
    moments = Counter(j.cancel[0] for j in canceled if j.cancel)
    assert set(moments) == {"pending", "processing", "end"}
    assert min(moments.values()) == 66
    lengths = [j.latency_s for j in jobs if j.latency_s is not None]
    assert len(lengths) == count
    assert min(lengths) >= 5.0
    assert max(lengths) <= 30.0
    for job in canceled:
        assert job.cancel is not None
        assert job.latency_s is not None
        moment, delay = job.cancel
        if moment == "pending":
            assert delay == 0.0
        elif moment == "processing":
            assert 0.0 < delay < job.latency_s
        else:
            assert abs(delay - job.latency_s) <= 0.4
    # Alternating gateways, one topic per submission.
    assert {j.first for j in jobs} == {0, 1}
    assert len({j.topic for j in jobs}) == count


def test_the_short_load_keeps_its_size_with_a_few_cancels() -> None:
    size = SIZES["short"]
    count = round(size.rate_per_s * size.load_s)
    jobs = plan(count, 2, "x", latency_s=size.latency_s, base_latency_s=2.0, rng=random.Random(1))
    assert count == 12
    assert sum(j.cancel is not None for j in jobs) == 2
    assert all(j.latency_s is None for j in jobs)
