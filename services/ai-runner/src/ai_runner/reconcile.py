"""The reconciler, and in polling mode the poller: asks the job-store which jobs are still
`processing`, asks Replicate about each one's prediction, and publishes what a webhook would
have told (`job.started`, `job.completed`); cancels a prediction that outlived its job's
deadline or a cancel request. Ports come in as arguments; no transport is imported here."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from ai_runner.handlers.runner import UNKNOWN_TYPE, utc_now
from ai_runner.ports import (
    Claims,
    EventSink,
    Limits,
    NoLimits,
    NoObserver,
    PermanentRejection,
    PredictionReader,
    Predictions,
    ResultStore,
    RunnerObserver,
    StuckJobFinder,
)
from jobs_proto.api import StuckJob
from jobs_proto.events import JobStarted
from jobs_proto.replicate import ReplicatePrediction, completed_event, joined_output
from jobs_runtime import tracing
from jobs_runtime.errors import Unavailable

log = logging.getLogger(__name__)

# Jobs asked about per round; `truncated` answers make the next round come at once.
_ROUND_LIMIT: Final = 500


@dataclass
class _Due:
    """When a job is next worth a read, and the interval that got it there."""

    at: datetime
    interval_s: float


@dataclass
class Reconciler:
    """One replica's reconciling state: each job's next read, kept in memory.

    Several replicas may reconcile the same job: what they publish is idempotent (the message
    ids `started:<predictionId>` and `completed:<predictionId>` are the same from every
    replica, and the job-store ignores a fact it already has), so the only cost of overlap is
    reads, which `max_reads_per_s` bounds per replica.

    A job is first read once the job-store has had it `processing` for `older_than_s`, then
    again after `min_interval_s`, growing by half each time up to `max_interval_s`.
    """

    finder: StuckJobFinder
    reader: PredictionReader
    predictions: Predictions
    events: EventSink
    claims: Claims
    results: ResultStore
    older_than_s: float
    min_interval_s: float = 1.0
    max_interval_s: float = 30.0
    concurrency: int = 8
    max_reads_per_s: float = 20.0
    now: Callable[[], datetime] = field(default=utc_now)
    observer: RunnerObserver = field(default_factory=NoObserver)
    limits: Limits = field(default_factory=NoLimits)
    _due: dict[uuid.UUID, _Due] = field(default_factory=dict)
    _started: set[str] = field(default_factory=set)
    _overdue: set[str] = field(default_factory=set)
    _next_read: float = 0.0

    async def sweep(self) -> bool:
        """One round; True when the job-store had more stuck jobs than one round takes.

        Raises `Unavailable` when the job-store cannot answer.
        """
        answer = await self.finder.stuck(self.older_than_s, _ROUND_LIMIT)
        now = self.now()
        listed = {job.job_id for job in answer.items}
        # Jobs no longer stuck (finished, or no longer processing) need no schedule.
        for gone in self._due.keys() - listed:
            del self._due[gone]
        due = [job for job in answer.items if self._is_due(job.job_id, now)]
        gate = asyncio.Semaphore(self.concurrency)

        async def one(job: StuckJob) -> None:
            async with gate:
                await self._pace()
                try:
                    # A trace of its own (the job's context is not stored), found by job.id;
                    # what it publishes follows from it, to the job-store and the SSE push.
                    attributes = {
                        "job.id": str(job.job_id),
                        "replicate.prediction.id": job.prediction_id or "",
                    }
                    with tracing.span("reconcile job", attributes=attributes):
                        await self.check(job)
                except Exception:
                    # NATS or the result store failing mid-way: this job is read again
                    # later; the others of the round go on.
                    log.exception("could not reconcile the job", extra={"job_id": str(job.job_id)})
                    self._later(job.job_id)

        await asyncio.gather(*(one(job) for job in due))
        return answer.truncated

    def _is_due(self, job_id: uuid.UUID, now: datetime) -> bool:
        entry = self._due.get(job_id)
        return entry is None or entry.at <= now

    async def _pace(self) -> None:
        # Spreads this replica's reads evenly, within Replicate's 3,000 reads a minute.
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._next_read)
        self._next_read = start + 1.0 / self.max_reads_per_s
        wait = start - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    def _later(self, job_id: uuid.UUID, *, longest: bool = False) -> None:
        entry = self._due.get(job_id)
        if longest:
            interval = self.max_interval_s
        elif entry is None:
            interval = self.min_interval_s
        else:
            interval = min(self.max_interval_s, entry.interval_s * 1.5)
        self._due[job_id] = _Due(self.now() + timedelta(seconds=interval), interval)

    async def check(self, job: StuckJob) -> None:
        """Read the job's prediction once and act on what it says. Never raises for a
        passing failure: the job is simply read again later."""
        job_type = job.type or UNKNOWN_TYPE
        context = {"job_id": str(job.job_id), "job_type": job_type}
        prediction_id = job.prediction_id
        if prediction_id is None:
            # Processing without a prediction known to the job-store: the claim may know it.
            stored = await self.claims.read(job.job_id)
            prediction_id = None if stored is None else stored.claim.prediction_id
        if prediction_id is None:
            self.observer.reconciled(job_type, "no_prediction")
            self._later(job.job_id, longest=True)
            return
        context["prediction_id"] = prediction_id
        try:
            prediction = await self.reader.get(prediction_id)
        except PermanentRejection as exc:
            log.warning("Replicate does not know the job's prediction: %s", exc, extra=context)
            self.observer.reconciled(job_type, "unknown")
            self._later(job.job_id, longest=True)
            return
        except Unavailable as exc:
            log.warning("could not read the prediction: %s", exc, extra=context)
            self.observer.reconciled(job_type, "error")
            self._later(job.job_id)
            return
        if prediction.is_final:
            await self._completed(job, prediction, context)
            self.observer.reconciled(job_type, "completed")
            self._due.pop(job.job_id, None)
            return
        if prediction.status == "processing" and prediction.id not in self._started:
            await self.events.publish(
                JobStarted(job_id=job.job_id, occurred_at=self.now(), prediction_id=prediction.id)
            )
            self._started.add(prediction.id)
            self.observer.reconciled(job_type, "started")
        else:
            self.observer.reconciled(job_type, "running")
        await self._stop_if_overdue(job, prediction.id, context)
        self._later(job.job_id)

    async def _completed(
        self, job: StuckJob, prediction: ReplicatePrediction, context: dict[str, str]
    ) -> None:
        output = joined_output(prediction.output)
        ref = None if output is None else await self.results.aside(prediction.id, output)
        event = completed_event(
            prediction,
            job.job_id,
            self.now(),
            output=None if ref is not None else output,
            output_ref=ref,
        )
        assert event is not None  # the caller checked `is_final`
        log.info(
            "learnt the prediction's outcome by asking Replicate",
            extra={**context, "prediction_status": prediction.status},
        )
        await self.events.publish(event)
        self._started.discard(prediction.id)
        self._overdue.discard(prediction.id)
        await self.limits.release(job.job_id)

    async def _stop_if_overdue(
        self, job: StuckJob, prediction_id: str, context: dict[str, str]
    ) -> None:
        """Cancel a running prediction whose job was asked to cancel (the cancel handler's
        call may have been lost) or is past its own deadline; its end comes as `canceled`,
        which the job-store turns into `canceled` or `deadline_exceeded`."""
        overdue = job.deadline_at is not None and self.now() >= job.deadline_at
        if not (job.cancel_requested or overdue):
            return
        try:
            await self.predictions.cancel(prediction_id)
        except PermanentRejection as exc:
            log.info("nothing to cancel: %s", exc, extra=context)
            return
        except Unavailable as exc:
            log.warning("could not cancel, will try again: %s", exc, extra=context)
            return
        if not job.cancel_requested and prediction_id not in self._overdue:
            log.warning("job past its deadline; its prediction is canceled", extra=context)
            self._overdue.add(prediction_id)
            self.observer.deadline_exceeded(job.type or UNKNOWN_TYPE, "while_running")
