"""The consumer's handler: the events a fetch hands over are queued and applied in batches,
each settled (acked, handed back or parked) by what applying it came to.

No I/O here: the store, the announcer, the result loader and the parking come in as arguments.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from opentelemetry.context import Context

from job_store.batches import (
    JobNotYetKnown,
    Outcome,
    Purged,
    ResultMissing,
    announce,
    apply_events,
)
from job_store.ports import (
    ChangeAnnouncer,
    JobStore,
    JobStoreObserver,
    NoObserver,
    Parking,
    ResultLoader,
)
from job_store.spend import settled_micros
from job_store.transitions import Change, Park
from jobs_proto.events import AnyJobEvent, JobCompleted
from jobs_proto.status import is_terminal
from jobs_runtime import tracing
from jobs_runtime.errors import Unavailable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Waiting:
    """An event handed to the applier, and how its caller learns the outcome."""

    event: AnyJobEvent
    done: asyncio.Future[None]
    started: float
    # The trace of the delivery that handed it over (None: tracing off), for its commit span.
    trace: Context | None = None


class EventApplier:
    """The consumer's handler: events in hand are applied in batches, one transaction each.

    The consumer loop calls this once per message of a fetched batch, all at once. The first
    call starts a flush as a task of its own, which runs once the loop has handed over every
    other message of the fetch (they are queued before it gets to run): so whatever is waiting
    goes into one transaction, and a lone event waits for nothing but that one turn of the
    event loop, never for a timer. Events arriving while a flush runs form the next batch.
    Each call returns (the consumer acks) only after its batch committed, or raises (the
    consumer naks it) when its event must wait or its batch could not be applied.

    A batch that fails as a whole because of one of its events (a poison event the store
    refuses) is rolled back and its events are applied again one transaction each, so only the
    events that fail on their own are handed back; the rest commit. A batch that fails because
    the database cannot be reached is retried as it is, in place, for up to about
    `unavailable_retry_s` (so a Postgres restart keeps the stream's order, which redelivery
    would scramble), then handed back whole.

    Within a batch the events apply in arrival order, which is stream order for events of one
    job. With `concurrent_batches` above 1, a batch of other jobs may start while one is being
    written (so a lone event need not wait for another job's commit, and Postgres flushes their
    commits together); an event whose job is in a batch being written waits for it, with any
    later events of that job, so per-job order holds across batches too. With 1 (the default),
    batches never overlap.

    A completion whose stored output is missing is handed back `result_misses` times; the next
    delivery ends the job `result_expired`. The count is per process: a restart starts it again,
    which only delays the verdict.

    An event for an unknown job that happened more than `orphan_after` ago can belong to no job:
    `requested` precedes every other event of its job in the stream, so it would have been
    applied long since. With `parking`, such an event is parked and settled instead of coming
    back forever.
    """

    def __init__(
        self,
        store: JobStore,
        announcer: ChangeAnnouncer,
        results: ResultLoader | None = None,
        *,
        observer: JobStoreObserver | None = None,
        result_misses: int = 5,
        parking: Parking | None = None,
        orphan_after: timedelta = timedelta(hours=1),
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        unavailable_retry_s: float = 12.0,
        concurrent_batches: int = 1,
    ) -> None:
        self._store = store
        # Short enough that messages in hand are settled well within the consumer's ack_wait.
        self._unavailable_retry_s = unavailable_retry_s
        self._announcer = announcer
        self._results = results
        self._observer: JobStoreObserver = observer or NoObserver()
        self._result_misses = result_misses
        self._clock = clock
        self._parking = parking
        self._orphan_after = orphan_after
        self._now = now
        self._misses: dict[tuple[uuid.UUID, str], int] = {}
        self._queue: list[_Waiting] = []
        self._max_flushers = max(1, concurrent_batches)
        self._flushers: set[asyncio.Task[None]] = set()
        # A flusher created and not yet run: it takes what is queued once it runs, so the
        # events handed over meanwhile (the rest of a fetch) join its batch.
        self._starting = False
        # Jobs of the batches being written: their later events wait, in order.
        self._busy: set[uuid.UUID] = set()

    async def __call__(self, event: AnyJobEvent) -> None:
        waiting = _Waiting(
            event, asyncio.get_running_loop().create_future(), self._clock(), tracing.current()
        )
        self._queue.append(waiting)
        self._start_flusher()
        await waiting.done

    async def drain(self) -> None:
        """Wait for the flushes in progress, if any (tests, shutdown)."""
        while self._flushers:
            await asyncio.shield(asyncio.gather(*self._flushers, return_exceptions=True))

    def _start_flusher(self) -> None:
        if self._starting or len(self._flushers) >= self._max_flushers:
            return
        if not any(w.event.job_id not in self._busy for w in self._queue):
            return  # none, or only events held for their job: its flusher takes them
        self._starting = True
        flusher = asyncio.create_task(self._flush_all())
        self._flushers.add(flusher)
        flusher.add_done_callback(self._flusher_done)

    def _flusher_done(self, flusher: asyncio.Task[None]) -> None:
        self._flushers.discard(flusher)
        if flusher.cancelled():
            self._starting = False  # it may have been cancelled before it ran
        # Events held back for a job another flusher was writing may be free now.
        self._start_flusher()

    def _take(self) -> list[_Waiting]:
        """The queued events whose jobs no other batch is writing, in order; the rest stay."""
        if not self._busy:
            taken, self._queue = self._queue, []
            return taken
        batch: list[_Waiting] = []
        held: list[_Waiting] = []
        for waiting in self._queue:
            (held if waiting.event.job_id in self._busy else batch).append(waiting)
        self._queue = held
        return batch

    async def _flush_all(self) -> None:
        self._starting = False
        while batch := self._take():
            jobs = {w.event.job_id for w in batch}
            self._busy |= jobs
            # Events arriving while this batch is written may go to a flusher of their own.
            self._start_flusher()
            try:
                await self._flush(batch)
            except BaseException as exc:
                # Never leave a caller waiting forever, whatever happened.
                for waiting in batch:
                    if not waiting.done.done():
                        waiting.done.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                        )
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._busy -= jobs

    def _expire(self, event: AnyJobEvent) -> bool:
        return self._misses.get(_miss_key(event), 0) >= self._result_misses

    async def _flush(self, batch: list[_Waiting]) -> None:
        events = [w.event for w in batch]
        outcomes: list[Outcome | Exception]
        begun = tracing.now_ns() if tracing.ENABLED else 0
        try:
            outcomes = list(await self._apply_when_available(events))
            self._observer.committed(len(batch), "batch")
        except Unavailable as exc:
            log.warning("postgres unavailable, %d events handed back: %s", len(batch), exc)
            outcomes = [exc] * len(batch)
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [exc]
            else:
                log.warning(
                    "batch of %d events failed, applying them one by one: %r", len(batch), exc
                )
                outcomes = [await self._apply_alone(e) for e in events]
        if not tracing.ENABLED:
            for waiting, outcome in zip(batch, outcomes, strict=True):
                await self._settle(waiting, outcome)
            return
        ended = tracing.now_ns()
        for waiting, outcome in zip(batch, outcomes, strict=True):
            # One transaction for many jobs: each event's trace gets a span of that commit,
            # and its change is announced from it.
            committed = tracing.finished_span(
                "job-store commit",
                parent=waiting.trace,
                start_ns=begun,
                end_ns=ended,
                attributes={
                    "db.system": "postgresql",
                    "job.id": str(waiting.event.job_id),
                    "job.event.kind": waiting.event.kind,
                    "job_store.batch_size": len(batch),
                },
                error=repr(outcome) if isinstance(outcome, Exception) else None,
            )
            with tracing.attached(committed):
                await self._settle(waiting, outcome)

    async def _apply_when_available(self, events: list[AnyJobEvent]) -> list[Outcome]:
        """`apply_events`, retried in place while the store is unavailable, for a while."""
        deadline = self._clock() + self._unavailable_retry_s
        delay = 0.1
        while True:
            try:
                return await apply_events(
                    events,
                    self._store,
                    self._results,
                    expire_missing_result=[self._expire(e) for e in events],
                )
            except Unavailable as exc:
                if self._clock() + delay > deadline:
                    raise
                log.info("postgres unavailable, retrying the batch in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _apply_alone(self, event: AnyJobEvent) -> Outcome | Exception:
        try:
            (outcome,) = await apply_events(
                [event], self._store, self._results, expire_missing_result=[self._expire(event)]
            )
        except Exception as exc:
            log.error(
                "event failed on its own, handed back",
                exc_info=exc,
                extra={"kind": event.kind, "job_id": str(event.job_id)},
            )
            return exc
        self._observer.committed(1, "single")
        return outcome

    async def _settle(self, waiting: _Waiting, outcome: Outcome | Exception) -> None:
        event = waiting.event
        key = _miss_key(event)
        error: Exception | None = None
        if isinstance(outcome, Change):
            self._misses.pop(key, None)
            settled = settled_micros(outcome.row, outcome.entry.summary)
            if settled is not None:
                # Committed, so counted once: a redelivery of the end changes nothing.
                self._observer.spent(outcome.row.job_type, settled)
            await announce(outcome.row, self._announcer)
            label = "changed"
            row = outcome.row
            # A terminal row never changes again, so this is the job's one ending.
            if is_terminal(row.status) and row.completed_at is not None:
                waited = (row.completed_at - row.created_at).total_seconds()
                self._observer.job_ended(row.job_type, row.status, max(0.0, waited))
        elif isinstance(outcome, Purged):
            label = "changed"
        elif outcome is None:
            self._misses.pop(key, None)
            label = "unchanged"
        elif isinstance(outcome, Park):
            self._misses.pop(key, None)
            label, error = await self._park(event, outcome)
        elif (
            isinstance(outcome, JobNotYetKnown)
            and self._parking is not None
            and self._is_orphan(event)
        ):
            label = "parked"  # settled: the consumer acks it, the parked copy remains
            try:
                await self._parking.park(
                    event, "no_such_job", f"job {event.job_id} unknown after {self._orphan_after}"
                )
            except Exception as exc:
                label, error = "failed", exc
        elif isinstance(outcome, JobNotYetKnown):
            self._observer.waited("job_not_yet_known")
            label, error = "deferred", outcome
        elif isinstance(outcome, ResultMissing):
            self._misses[key] = self._misses.get(key, 0) + 1
            self._observer.waited("result_missing")
            label, error = "deferred", outcome
        else:
            label, error = "failed", outcome
        self._observer.applied(event.kind, label, self._clock() - waiting.started)
        if waiting.done.done():
            return  # its caller gave up (shutdown): the consumer handed the message back
        if error is None:
            waiting.done.set_result(None)
        else:
            waiting.done.set_exception(error)

    async def _park(self, event: AnyJobEvent, park: Park) -> tuple[str, Exception | None]:
        """Keep an event that must never be applied aside, then settle it; a park that fails is
        handed back (the redelivery judges it again and parks it again)."""
        if self._parking is None:
            # No dead-letter stream wired (tests, tools): the log line is all an operator gets.
            log.warning(
                "event not applied: %s",
                park.detail,
                extra={"kind": event.kind, "job_id": str(event.job_id), "reason": park.reason},
            )
            return "parked", None
        try:
            await self._parking.park(event, park.reason, park.detail)
        except Exception as exc:
            return "failed", exc
        return "parked", None

    def _is_orphan(self, event: AnyJobEvent) -> bool:
        occurred = event.occurred_at
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=UTC)
        return self._now() - occurred > self._orphan_after


def _miss_key(event: AnyJobEvent) -> tuple[uuid.UUID, str]:
    ref = event.output_ref if isinstance(event, JobCompleted) else None
    return (event.job_id, ref or "")
