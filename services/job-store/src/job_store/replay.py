"""Rebuilding the tables from the stream: every event of `JOBS`, from the first, applied in
batches through the same `apply_events` (and so the same transitions) as the live consumer.

No I/O here: the batches of events and the store come in as arguments.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass

from job_store.batches import JobNotYetKnown, Outcome, Purged, apply_events
from job_store.ports import JobStore, ResultLoader
from job_store.transitions import Change, Park
from jobs_proto.events import AnyJobEvent, JobRequested

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayReport:
    """What a replay did, event by event (logged at the end of `job-store replay`)."""

    events: int = 0
    changed: int = 0
    unchanged: int = 0
    purged: int = 0
    # Events whose job never appeared (its request aged out of the stream, or was purged).
    orphans: int = 0
    # Events that failed on their own (left out, logged); a replay should have none.
    failed: int = 0
    # Messages that are no event of this release (skipped by the reader, counted here).
    skipped: int = 0
    # Events from a prediction other than their job's: not applied, and not parked again (the
    # live consumer parked them when they first came).
    foreign: int = 0


async def replay(
    batches: AsyncIterable[Sequence[AnyJobEvent]],
    store: JobStore,
    results: ResultLoader | None = None,
) -> ReplayReport:
    """Apply every batch in stream order; returns what happened.

    An event ahead of its job's request waits, as it would on the live consumer, and is applied
    again after the batch that brings the request (the transitions make the order of a
    job's events after its request irrelevant to the final row). A completion whose stored
    output is gone ends its job `result_expired` at once: nothing will bring it back.
    """
    report = ReplayReport()
    waiting: list[AnyJobEvent] = []
    async for batch in batches:
        report.events += len(batch)
        new = await _apply(list(batch), store, results, report)
        # Only a request can make a waiting event's job appear; retry those it concerns.
        created = {e.job_id for e in batch if isinstance(e, JobRequested)}
        ready = [e for e in waiting if e.job_id in created]
        if ready:
            # Counted when they finally apply, or in `orphans` at the end.
            waiting = [e for e in waiting if e.job_id not in created]
            waiting.extend(await _apply(ready, store, results, report))
        waiting.extend(new)
    report.orphans = len(waiting)
    for event in waiting:
        log.info(
            "event of a job the stream does not hold, skipped",
            extra={"kind": event.kind, "job_id": str(event.job_id)},
        )
    return report


async def _apply(
    events: list[AnyJobEvent],
    store: JobStore,
    results: ResultLoader | None,
    report: ReplayReport,
) -> list[AnyJobEvent]:
    """Apply `events` in one transaction (else one by one); returns those still waiting."""
    expire = [True] * len(events)
    outcomes: list[Outcome | Exception]
    try:
        outcomes = list(await apply_events(events, store, results, expire_missing_result=expire))
    except Exception as exc:
        log.warning("batch failed, applying its events one by one: %r", exc)
        outcomes = []
        for event in events:
            try:
                (alone,) = await apply_events([event], store, results, expire_missing_result=[True])
            except Exception as single:
                log.error(
                    "event failed, left out",
                    exc_info=single,
                    extra={"kind": event.kind, "job_id": str(event.job_id)},
                )
                outcomes.append(single)
            else:
                outcomes.append(alone)
    still: list[AnyJobEvent] = []
    for event, outcome in zip(events, outcomes, strict=True):
        if isinstance(outcome, JobNotYetKnown):
            still.append(event)
        elif isinstance(outcome, Change):
            report.changed += 1
        elif isinstance(outcome, Purged):
            report.purged += 1
        elif isinstance(outcome, Park):
            report.foreign += 1
        elif outcome is None:
            report.unchanged += 1
        else:
            report.failed += 1
    return still
