"""Each subcommand as one function over the adapters it needs: gather, judge (`diagnosis`),
answer a report. No argument parsing or printing here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from jobs_ops.diagnosis import stuck_entry, stuck_since
from jobs_ops.ports import Bus, Database, Predictions, StoreUnavailable
from jobs_ops.reports import (
    JobReport,
    ParkedReport,
    PredictionReport,
    Replayed,
    ReplayReport,
    StuckEntry,
    StuckReport,
)
from jobs_proto.api import JobHistoryEntry, StuckJob
from jobs_proto.job_types import JOB_TYPES

# Stuck jobs read at most; more is a bigger incident than a list helps with (`truncated`).
STUCK_LIMIT: Final = 1000


async def job_report(
    job_id: uuid.UUID,
    bus: Bus,
    *,
    user_id: str | None = None,
    database: Database | None = None,
    replicate: Predictions | None = None,
) -> JobReport:
    """What happened to one job: the store's row and history (Postgres when given, else the
    job-store asked as the job's owner), its predictions at Replicate, its stream events."""
    notes: list[str] = []
    found_in_stream = await bus.job_events(job_id)
    events = found_in_stream.events
    owner = user_id or found_in_stream.owner
    source: Literal["job-store", "postgres"] | None = None
    job: dict[str, Any] | None = None
    history: list[JobHistoryEntry] | None = None
    if database is not None:
        found = await database.job(job_id)
        if found is not None:
            source = "postgres"
            job, history = found
        else:
            notes.append("the job-store's database holds no such job")
    elif owner is None:
        notes.append(
            "the job-store answers a job's owner only, and the stream holds no `requested` event"
            " naming one: pass --user, or set DATABASE_URL"
        )
    else:
        try:
            reply = await bus.job(job_id, owner)
            if reply.job is None:
                notes.append(f"the job-store knows no such job of user {owner!r}")
            else:
                source = "job-store"
                job = msgspec.to_builtins(reply.job)
                job["userId"] = owner
                history = await bus.history(job_id, owner)
        except StoreUnavailable as exc:
            notes.append(str(exc))
    if not events:
        notes.append("no events of this job in the stream (never published, or aged out)")
    ids = _prediction_ids(job, history, found_in_stream.prediction_ids)
    predictions = await _predictions(ids, replicate)
    if ids and replicate is None:
        notes.append("REPLICATE_API_TOKEN is not set: predictions were not read from Replicate")
    return JobReport(
        job_id=job_id,
        source=source,
        job=job,
        history=history,
        predictions=predictions,
        events=events,
        notes=notes,
    )


def _prediction_ids(
    job: dict[str, Any] | None,
    history: list[JobHistoryEntry] | None,
    submitted: list[str],
) -> list[str]:
    """Every prediction the job is known to have had, oldest first: a retried creation can leave
    an orphan beside the one the job is bound to."""
    ids: list[str] = []
    for entry in history or []:
        if isinstance(found := entry.summary.get("predictionId"), str):
            ids.append(found)
    ids += submitted
    if job is not None and isinstance(found := job.get("predictionId"), str):
        ids.append(found)
    return list(dict.fromkeys(ids))


async def _predictions(ids: list[str], replicate: Predictions | None) -> list[PredictionReport]:
    if replicate is None:
        return [PredictionReport(prediction_id=i, problem="not read") for i in ids]
    return [await replicate.get(i) for i in ids]


async def stuck_report(
    older_than_s: float,
    bus: Bus,
    *,
    database: Database | None = None,
    replicate: Predictions | None = None,
    now: datetime | None = None,
) -> StuckReport:
    """Jobs not yet terminal past their deadline or older than `older_than_s`, each with why."""
    # Past its deadline counts even when younger than asked: read from the shortest deadline.
    read_from = min(older_than_s, *(t.deadline_s for t in JOB_TYPES.values()))
    jobs: list[StuckJob]
    if database is not None:
        jobs, truncated = await database.stuck(read_from, STUCK_LIMIT)
    else:
        found = await bus.stuck(read_from, STUCK_LIMIT)
        jobs, truncated = found.items, found.truncated
    at = now or datetime.now(UTC)
    items: list[StuckEntry] = []
    for job in jobs:
        stuck = stuck_since(job, at, older_than_s)
        if stuck is None:
            continue
        prediction = None
        if replicate is not None and job.prediction_id is not None:
            prediction = await replicate.get(job.prediction_id)
        items.append(stuck_entry(job, *stuck, prediction))
    return StuckReport(older_than_s=older_than_s, items=items, truncated=truncated)


async def parked_report(bus: Bus) -> ParkedReport:
    return ParkedReport(stream=bus.parked_stream, items=[p for p, _ in await bus.parked()])


async def replay_parked(bus: Bus, seq: int | None) -> ReplayReport:
    """Republish one parked message (`seq`) or all of them (None) to where they were bound."""
    found = await bus.parked()
    chosen = [(p, body) for p, body in found if seq is None or p.seq == seq]
    items: list[Replayed] = [await bus.replay(p, body) for p, body in chosen]
    return ReplayReport(stream=bus.parked_stream, items=items)
