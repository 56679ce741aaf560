"""Paces the `requested` consumer by the shared limits: it fetches only as many jobs as may
start now, so jobs that must wait stay in the stream instead of being delivered and handed back.
Pure logic over the limits' capacity, answering the runtime's consumer loop."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ai_runner.ports import Capacity
from jobs_runtime.pacing import Allowance, Pace

# However long a limit says to wait, look again within this: a release may come sooner.
MAX_PAUSE_S = 1.0
# Far from the limits (at least this many creates free), a capacity read serves the fetches of
# the next `REUSE_S` seconds, less what each may take (a whole batch, counted as taken): reading
# the bucket before every fetch cost two NATS round trips per batch. Near a limit every fetch
# reads again, so holding back stays exact; another replica's creates in between are an
# overestimate that `admit` catches (the job waits in the stream, as before pacing).
REUSE_MARGIN = 100
REUSE_S = 1.0


def paced_by(
    capacity: Callable[[], Awaitable[Capacity]],
    on_wait: Callable[[str], None],
    *,
    batch: int = 64,
    clock: Callable[[], float] = time.monotonic,
) -> Pace:
    """The consumer loop's `pace` from the limits' capacity; `on_wait(limit)` is told each time
    a full limit holds fetching back. `batch`: the most one fetch takes."""
    read_at = float("-inf")
    left = 0

    async def pace() -> Allowance:
        nonlocal read_at, left
        if left >= REUSE_MARGIN and clock() - read_at < REUSE_S:
            granted = left
        else:
            now = await capacity()
            if now.wait is not None:
                left = 0
                on_wait(now.wait.limit)
                return Allowance(0, min(now.wait.wait_s, MAX_PAUSE_S))
            read_at, granted = clock(), now.free
        left = granted - min(granted, batch)
        return Allowance(granted)

    return pace
