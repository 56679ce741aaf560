"""Which running jobs' text some client reads, as the gateways say (`OutputWanted`): the relay
reads a prediction's stream only for those, since relaying costs CPU per token and a job nobody
watches gets its text with its result. Replicate replays a stream from its start, so starting
late loses nothing.

Pure: the consumer feeds it the gateways' messages and asks it about each submitted job.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Final

# Gateways repeat their word every `OUTPUT_WANTED_EVERY_S` (5 s) while a client reads; a word
# older than this many periods is stale (its client left).
STALE_AFTER_PERIODS: Final = 3
# Jobs remembered at most: far more than run at once.
MAX_REMEMBERED: Final = 100_000


class RecentlyWanted:
    """Jobs a gateway asked for lately, by when it last did; oldest forgotten first."""

    def __init__(self, every_s: float, max_remembered: int = MAX_REMEMBERED) -> None:
        self._stale_after_s = every_s * STALE_AFTER_PERIODS
        self._max = max_remembered
        self._at: OrderedDict[uuid.UUID, float] = OrderedDict()

    def note(self, job_id: uuid.UUID, now: float) -> None:
        self._at[job_id] = now
        self._at.move_to_end(job_id)
        while len(self._at) > self._max:
            self._at.popitem(last=False)

    def wanted(self, job_id: uuid.UUID, now: float) -> bool:
        """Whether a client read the job's text within the last few periods."""
        at = self._at.get(job_id)
        return at is not None and now - at <= self._stale_after_s

    def __len__(self) -> int:
        return len(self._at)


def start_now(*, on_demand: bool, wanted: bool, logged_chars: int) -> bool:
    """Whether a submitted prediction's stream is read at once: always when the relay reads
    every stream; else when a client wants the job's text, or the log already holds some (a
    client wanted it before this replica took the stream over)."""
    return not on_demand or wanted or logged_chars > 0
