"""Test doubles of the ai-runner's ports, once for every test module: fakes standing for real
adapters (`FakeClaims` for `KvClaims`, `FakeHistory` for `StreamHistory`, `FakeResults` for
`ObjectStoreResults`) run the same contract tests as those (`integration/test_*_contract.py`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ai_runner.ports import (
    Capacity,
    Claim,
    LimitWait,
    NewPrediction,
    PermanentRejection,
    ReplicateUnavailable,
    StoredClaim,
)
from jobs_proto.api import StuckJob, StuckJobs
from jobs_proto.events import JobEvent
from jobs_proto.replicate import ReplicatePrediction
from jobs_runtime.errors import Unavailable

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Created:
    model: str
    model_input: dict[str, Any]
    webhook: str | None
    events: list[str]


@dataclass
class FakePredictions:
    failure: PermanentRejection | ReplicateUnavailable | None = None
    created: list[Created] = field(default_factory=list)
    deadlines: list[int | None] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    # Runs after a create reached "Replicate" and before its answer: a racing event.
    meanwhile: Callable[[], Awaitable[None]] | None = None
    # Set: every prediction has `urls.stream`, this plus its id.
    stream_base: str | None = None

    async def create(
        self,
        model: str,
        model_input: dict[str, Any],
        webhook: str | None,
        events: Sequence[str],
        deadline_s: int | None = None,
    ) -> NewPrediction:
        if self.failure is not None:
            raise self.failure
        self.created.append(Created(model, model_input, webhook, list(events)))
        self.deadlines.append(deadline_s)
        if self.meanwhile is not None:
            await self.meanwhile()
        prediction_id = f"pred-{len(self.created)}"
        stream = None if self.stream_base is None else f"{self.stream_base}{prediction_id}"
        return NewPrediction(prediction_id, stream)

    async def cancel(self, prediction_id: str) -> None:
        self.canceled.append(prediction_id)


@dataclass
class FakeClaims:
    """Compare-and-set over a dict, as the KV bucket does it."""

    stored: dict[uuid.UUID, StoredClaim] = field(default_factory=dict)

    async def read(self, job_id: uuid.UUID) -> StoredClaim | None:
        return self.stored.get(job_id)

    async def create(self, job_id: uuid.UUID, claim: Claim) -> int | None:
        if job_id in self.stored:
            return None
        self.stored[job_id] = StoredClaim(claim, 1)
        return 1

    async def update(self, job_id: uuid.UUID, claim: Claim, revision: int) -> int | None:
        current = self.stored.get(job_id)
        if current is None or current.revision != revision:
            return None
        self.stored[job_id] = StoredClaim(claim, revision + 1)
        return revision + 1

    def claim(self, job_id: uuid.UUID) -> Claim:
        return self.stored[job_id].claim


@dataclass
class CountingClaims(FakeClaims):
    """Counts the round trips a real bucket would make."""

    reads: int = 0
    writes: int = 0

    async def read(self, job_id: uuid.UUID) -> StoredClaim | None:
        self.reads += 1
        return await super().read(job_id)

    async def create(self, job_id: uuid.UUID, claim: Claim) -> int | None:
        self.writes += 1
        return await super().create(job_id, claim)

    async def update(self, job_id: uuid.UUID, claim: Claim, revision: int) -> int | None:
        self.writes += 1
        return await super().update(job_id, claim, revision)


@dataclass
class CutOffClaims(FakeClaims):
    """A bucket whose node is cut off from its cluster: the first `refusals` updates fail as
    NATS does then (`Unavailable`); creates and reads still work."""

    refusals: int = 0

    async def update(self, job_id: uuid.UUID, claim: Claim, revision: int) -> int | None:
        if self.refusals > 0:
            self.refusals -= 1
            raise Unavailable("claims entry not stored: JetStream system temporarily unavailable")
        return await super().update(job_id, claim, revision)


@dataclass
class FakeHistory:
    bound: dict[uuid.UUID, str] = field(default_factory=dict)

    async def prediction_of(self, job_id: uuid.UUID) -> str | None:
        return self.bound.get(job_id)


@dataclass
class FakeEvents:
    published: list[JobEvent] = field(default_factory=list)

    async def publish(self, event: JobEvent, /) -> object:
        self.published.append(event)
        return None


@dataclass
class FakeLimits:
    """Admits while `free` lasts; records what is held and released."""

    free: int = 0
    held: dict[uuid.UUID, float] = field(default_factory=dict)
    released: list[uuid.UUID] = field(default_factory=list)

    async def admit(self, job_id: uuid.UUID, hold_s: float, job_type: str = "") -> LimitWait | None:
        if self.free <= 0:
            return LimitWait("creations", 7.5)
        self.free -= 1
        self.held[job_id] = hold_s
        return None

    async def release(self, job_id: uuid.UUID) -> None:
        self.released.append(job_id)


@dataclass
class CountingObserver:
    counts: dict[str, int] = field(default_factory=dict)

    def _add(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def created(self, job_type: str) -> None:
        self._add(f"created:{job_type}")

    def retried(self, job_type: str, reason: str) -> None:
        self._add(f"retried:{reason}")

    def limit_waited(self, job_type: str, limit: str) -> None:
        self._add(f"limit_waited:{limit}")

    def adopted(self, job_type: str) -> None:
        self._add("adopted")

    def orphan_canceled(self, job_type: str) -> None:
        self._add("orphan_canceled")

    def canceled(self, job_type: str, before_creation: bool) -> None:
        self._add(f"canceled:{'before' if before_creation else 'prediction'}:{job_type}")

    def attempts_exhausted(self, job_type: str) -> None:
        self._add("attempts_exhausted")

    def deadline_exceeded(self, job_type: str, stage: str) -> None:
        self._add(f"deadline_exceeded:{stage}")

    def reconciled(self, job_type: str, outcome: str) -> None:
        self._add(f"reconciled:{outcome}")

    def in_flight(self, job_type: str, count: int) -> None:
        self._add(f"in_flight:{job_type}:{count}")


@dataclass
class Clock:
    at: datetime = NOW

    def __call__(self) -> datetime:
        return self.at


@dataclass
class FakeFinder:
    items: list[StuckJob] = field(default_factory=list)
    truncated: bool = False
    asked: list[float] = field(default_factory=list)

    async def stuck(self, older_than_s: float, limit: int) -> StuckJobs:
        self.asked.append(older_than_s)
        return StuckJobs(items=list(self.items), truncated=self.truncated)


@dataclass
class FakeReader:
    answers: dict[str, ReplicatePrediction | Exception] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)

    async def get(self, prediction_id: str) -> ReplicatePrediction:
        self.reads.append(prediction_id)
        answer = self.answers[prediction_id]
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class FakeResults:
    limit: int = 1000
    stored: dict[str, str] = field(default_factory=dict)

    async def aside(self, prediction_id: str, output: str) -> str | None:
        if len(output) <= self.limit:
            return None
        self.stored[prediction_id] = output
        return f"results/{prediction_id}"


@dataclass
class FakeCapacity:
    answers: list[Capacity]
    reads: int = 0

    async def __call__(self) -> Capacity:
        self.reads += 1
        return self.answers[min(self.reads, len(self.answers)) - 1]


@dataclass
class Ticks:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Waits:
    limits: list[str] = field(default_factory=list)

    def __call__(self, limit: str) -> None:
        self.limits.append(limit)
