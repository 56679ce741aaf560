"""What the subcommands need from the outside world, as Protocols: the adapters implement them
over NATS, Postgres and Replicate's API."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from jobs_ops.events import JobInStream
from jobs_ops.reports import ParkedMessage, PredictionReport, Replayed
from jobs_proto.api import JobHistoryEntry, JobReply, StuckJob, StuckJobs


class StoreUnavailable(Exception):
    """The job-store did not answer a read (down, or answering an error)."""


class Bus(Protocol):
    """The jobs stream, the parked stream and the job-store's read endpoints."""

    @property
    def parked_stream(self) -> str: ...

    async def job_events(self, job_id: uuid.UUID) -> JobInStream: ...

    async def job(self, job_id: uuid.UUID, user_id: str) -> JobReply: ...

    async def history(self, job_id: uuid.UUID, user_id: str) -> list[JobHistoryEntry] | None: ...

    async def stuck(self, older_than_s: float, limit: int) -> StuckJobs: ...

    async def parked(self) -> list[tuple[ParkedMessage, bytes]]: ...

    async def replay(self, parked: ParkedMessage, body: bytes) -> Replayed: ...


class Database(Protocol):
    """The job-store's database, read directly."""

    async def job(
        self, job_id: uuid.UUID
    ) -> tuple[dict[str, Any], list[JobHistoryEntry]] | None: ...

    async def stuck(self, older_than_s: float, limit: int) -> tuple[list[StuckJob], bool]: ...


class Predictions(Protocol):
    """Replicate's predictions, read one at a time."""

    async def get(self, prediction_id: str) -> PredictionReport: ...
