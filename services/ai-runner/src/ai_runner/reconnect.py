"""When the relay connects to a prediction's stream again, and when it gives up: pure rules over
how its connections went, so the reader task holds no policy of its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Why a relay stopped reading a stream for good, for metrics and logs.
GAVE_UP: Final = "gave_up"
JOB_OVER: Final = "job_over"


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Connect again after `delay_s`."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop reading the stream: `reason` is `gave_up` or `job_over`."""

    reason: str


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """`max_failures` connections in a row that brought no event give up; each waits up to
    `base_s * 2^(n-1)` (capped at `cap_s`), half of it jittered. A stream older than `max_age_s`
    (the longest job's deadline and a margin) belongs to a job that is over, whatever the bus
    said or failed to say about its end."""

    base_s: float = 0.2
    cap_s: float = 5.0
    max_failures: int = 8
    max_age_s: float = 3600.0

    def failures_after(self, failures: int, *, got_events: bool, idle: bool) -> int:
        """The count of failed connections in a row once one more has ended.

        A connection that brought events worked (it was cut later, which Replicate does), and an
        idle answer (`408`) says the prediction is alive but quiet: neither counts, and a
        working connection clears the count."""
        if got_events:
            return 0
        if idle:
            return failures
        return failures + 1

    def next_step(self, failures: int, *, age_s: float, jitter: float) -> Reconnect | GiveUp:
        """What to do after a connection ended early. `jitter` in [0, 1) spreads the waits of
        streams cut together (a Replicate restart) so their reconnects do not arrive at once."""
        if age_s > self.max_age_s:
            return GiveUp(JOB_OVER)
        if failures >= self.max_failures:
            return GiveUp(GAVE_UP)
        if failures == 0:
            # A cut after text: Replicate ends long streams by design; read on soon.
            return Reconnect(self.base_s * (0.5 + 0.5 * jitter))
        ceiling = min(self.cap_s, self.base_s * 2 ** (failures - 1))
        return Reconnect(ceiling * (0.5 + 0.5 * jitter))

    def is_over(self, age_s: float) -> bool:
        """Whether a stream this old (since its prediction was announced) is not worth opening."""
        return age_s > self.max_age_s
