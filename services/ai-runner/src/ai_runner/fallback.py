"""When the relay reads a prediction again after its stream failed for good (gone, or given up
while the prediction may still run), and when it stops: pure rules over the last read.

Streaming job types get no `output` webhooks, so without this a stream lost mid-way would leave
the output log and progress still until the job's end. It is the rare path: reads are paced per
replica (`ReadPace`) and stop with the prediction, the job or repeated failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ai_runner.reconnect import GAVE_UP, JOB_OVER

# Why polling stopped, beside `gave_up` and `job_over`.
ENDED: Final = "ended"
GONE: Final = "gone"


@dataclass(frozen=True, slots=True)
class PollAgain:
    """Read the prediction again after `delay_s`."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class PollStop:
    """Stop reading: `ended`, `gone`, `gave_up` or `job_over`."""

    reason: str


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    """A read every `every_s` (half of it jittered either way) while the prediction runs;
    `max_failures` failed reads in a row, or a stream older than `max_age_s`, stop it."""

    every_s: float = 1.5
    max_failures: int = 20
    max_age_s: float = 3600.0

    def next_step(
        self, *, final: bool, unknown: bool, failures: int, age_s: float, jitter: float
    ) -> PollAgain | PollStop:
        """After one read: `final` the prediction had a final status (its whole text was
        offered), `unknown` Replicate answered 404, `failures` the failed reads in a row."""
        if final:
            return PollStop(ENDED)
        if unknown:
            return PollStop(GONE)
        if age_s > self.max_age_s:
            return PollStop(JOB_OVER)
        if failures >= self.max_failures:
            return PollStop(GAVE_UP)
        return PollAgain(self.every_s * (0.75 + 0.5 * jitter))


class ReadPace:
    """At most `per_s` fallback reads a second from this replica, whichever streams make them:
    many failed streams at once read each prediction less often instead of exceeding
    Replicate's read limit."""

    def __init__(self, per_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._gap_s = 1.0 / per_s
        self._clock = clock
        self._next = float("-inf")

    def delay(self) -> float:
        """Reserve the next read; how long to wait for it."""
        now = self._clock()
        at = max(now, self._next)
        self._next = at + self._gap_s
        return at - now
