"""Which running jobs' text a stream of this gateway process reads, so the ai-runner's relay
reads a prediction's `urls.stream` only while someone does (`OutputWanted`).

A job is watched while it is not terminal, its prediction is known and some open stream of this
process reads it (the hub answers that last part). The set is kept lazily: a job joins it (and
is announced at once) when an event can make it watched (a stream opens, its prediction becomes
known), and each periodic round recomputes it from scratch, so a stream that closed needs no
bookkeeping and a job announced once is announced again each round, however many streams read
it. No NATS here: an adapter publishes what `fresh` and `round` answer.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from jobs_proto.output import OutputWanted

# Running jobs whose prediction is known, remembered at most: far more than run at once.
MAX_RUNNING: Final = 100_000
# Jobs seen ending, remembered so a state read just before the end (a stream opening while the
# job ends) cannot make one running again; the race lasts a read, so a few suffice.
MAX_ENDED: Final = 10_000


class WantedOutput:
    """The watched set of one gateway process. `read_by(job_id)` tells whether an open stream
    reads the job; `on_fresh` (the publisher's wake-up) is called when a job joins the set."""

    def __init__(
        self,
        read_by: Callable[[uuid.UUID], bool],
        max_running: int = MAX_RUNNING,
        max_ended: int = MAX_ENDED,
    ) -> None:
        self._read_by = read_by
        self._max_running = max_running
        self._max_ended = max_ended
        # Non-terminal jobs with their prediction, least recently learnt first.
        self._running: OrderedDict[uuid.UUID, str] = OrderedDict()
        self._ended: OrderedDict[uuid.UUID, None] = OrderedDict()
        # Watched as of the last round, or joined since (and then also in `_fresh`).
        self._watched: set[uuid.UUID] = set()
        self._fresh: dict[uuid.UUID, str] = {}
        self.on_fresh: Callable[[], None] | None = None

    @property
    def watched(self) -> int:
        """Jobs watched as of the last round, and those joined since."""
        return len(self._watched)

    def learn(self, job_id: uuid.UUID, prediction_id: str | None, terminal: bool) -> None:
        """A state of the job (announced or read): its prediction, or its end. A state without
        a prediction tells nothing (a recorded prediction never changes)."""
        if terminal:
            self._running.pop(job_id, None)
            self._watched.discard(job_id)
            self._fresh.pop(job_id, None)
            self._ended[job_id] = None
            self._ended.move_to_end(job_id)
            while len(self._ended) > self._max_ended:
                self._ended.popitem(last=False)
            return
        if prediction_id is None or job_id in self._ended:
            return
        self._running[job_id] = prediction_id
        self._running.move_to_end(job_id)
        while len(self._running) > self._max_running:
            forgotten, _ = self._running.popitem(last=False)
            self._watched.discard(forgotten)
            self._fresh.pop(forgotten, None)
        self.look(job_id)

    def look(self, job_id: uuid.UUID) -> None:
        """After something that may make the job watched (a stream opened, its prediction
        learnt): a job that joins the set is announced at the next `fresh`."""
        if job_id in self._watched:
            return
        prediction_id = self._running.get(job_id)
        if prediction_id is None or not self._read_by(job_id):
            return
        self._watched.add(job_id)
        self._fresh[job_id] = prediction_id
        if self.on_fresh is not None:
            self.on_fresh()

    def fresh(self) -> list[OutputWanted]:
        """The jobs that joined the set since the last `fresh` or `round`, once each."""
        fresh, self._fresh = self._fresh, {}
        return [OutputWanted(job_id=job, prediction_id=p) for job, p in fresh.items()]

    def round(self) -> list[OutputWanted]:
        """Every job watched now, once each (the periodic reminder); the set becomes that."""
        watched = [
            OutputWanted(job_id=job, prediction_id=p)
            for job, p in self._running.items()
            if self._read_by(job)
        ]
        self._watched = {w.job_id for w in watched}
        self._fresh = {}
        return watched
