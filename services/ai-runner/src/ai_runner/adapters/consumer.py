"""Paces the `requested` consumer by the shared limits: it fetches only as many jobs as may
start now, so jobs that must wait stay in the stream instead of being delivered and handed back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ai_runner.adapters.limits import Capacity
from jobs_runtime.consumer import Allowance, Pace

# However long a limit says to wait, look again within this: a release may come sooner.
MAX_PAUSE_S = 1.0


def paced_by(capacity: Callable[[], Awaitable[Capacity]], on_wait: Callable[[str], None]) -> Pace:
    """The consumer loop's `pace` from the limits' capacity; `on_wait(limit)` is told each time
    a full limit holds fetching back."""

    async def pace() -> Allowance:
        now = await capacity()
        if now.wait is not None:
            on_wait(now.wait.limit)
            return Allowance(0, min(now.wait.wait_s, MAX_PAUSE_S))
        return Allowance(now.free)

    return pace
