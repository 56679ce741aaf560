"""The gateway's test doubles, once: each stands for a real adapter over memory (the `JOBS`
stream, the job-store and its budgets, the idempotency keys, the JWKS endpoint, the open-jobs
limit) and can be
told to fail the way the real one does (`Unavailable`), or like a bug (`broken`)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from gateway.limits import LimitExceeded
from gateway.ports import (
    BadCursor,
    ConflictReason,
    IdempotencyRecord,
    JwksFetchError,
    ReadSource,
    StoredRecord,
)
from jobs_proto.api import (
    GetJob,
    GetJobHistory,
    JobHistory,
    JobHistoryEntry,
    JobPage,
    JobReply,
    JobSummary,
    JobView,
    ListJobs,
)
from jobs_proto.events import JobEvent, JobRequested
from jobs_proto.pending import pending_view
from jobs_proto.spend import (
    BudgetDecision,
    BudgetScope,
    BudgetState,
    GetUsage,
    ReleaseBudget,
    ReserveBudget,
    UsageReport,
    month_start,
)
from jobs_proto.status import JobStatus
from jobs_proto.subjects import message_id
from jobs_runtime.errors import Unavailable


@dataclass
class Failing:
    """`down`: the dependency does not answer (`Unavailable`); `broken`: a bug (`500`)."""

    down: bool = False
    broken: bool = False

    def _check(self, what: str) -> None:
        if self.broken:
            raise RuntimeError("a bug")
        if self.down:
            raise Unavailable(f"no {what}")


@dataclass
class FakeJobsStream(Failing):
    """The `JOBS` stream, for both ports over it: `EventBus` and `RequestedLog`.

    `stored` is the stream (a publish of a message id it holds is dropped, as JetStream's
    duplicate window does), `published` every event stored or dropped as a duplicate.
    `down` fails publishes and reads alike; `ambiguous` stores, then loses the
    acknowledgement; `unreadable` fails reads only; `gate` holds every publish until set.
    """

    stored: list[JobEvent] = field(default_factory=list)
    published: list[JobEvent] = field(default_factory=list)
    ambiguous: bool = False
    unreadable: bool = False
    gate: asyncio.Event | None = None

    async def publish(self, event: JobEvent) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self._check("JetStream")
        self.published.append(event)
        if all(message_id(e) != message_id(event) for e in self.stored):
            self.stored.append(event)
        if self.ambiguous:
            raise Unavailable("acknowledgement lost")

    async def find_requested(self, job_id: uuid.UUID) -> JobRequested | None:
        self._check("stream")
        if self.unreadable:
            raise Unavailable("no stream")
        return next(
            (e for e in self.stored if isinstance(e, JobRequested) and e.job_id == job_id), None
        )


@dataclass
class FakeJobStore(Failing):
    """The job-store's reads: the jobs `put` in it and, when it `consumes` a stream, every
    job requested there (pending, or the status `statuses` names). Lists are newest first,
    `page_size` at most, the cursor an offset; any other cursor is `BadCursor`. A job's
    history is what `histories` holds for it, else its `requested` entry alone; its cursor is
    the last `seq` sent, as the job-store's."""

    consumes: FakeJobsStream | None = None
    statuses: dict[uuid.UUID, JobStatus] = field(default_factory=dict)
    page_size: int = 200
    asked: list[GetJob] = field(default_factory=list)
    listed: list[ListJobs] = field(default_factory=list)
    histories: dict[uuid.UUID, list[JobHistoryEntry]] = field(default_factory=dict)
    histories_asked: list[GetJobHistory] = field(default_factory=list)
    _jobs: dict[uuid.UUID, tuple[str, JobView]] = field(default_factory=dict)

    def put(self, view: JobView, user_id: str = "alice") -> None:
        self._jobs[view.job_id] = (user_id, view)

    def _all(self) -> dict[uuid.UUID, tuple[str, JobView]]:
        jobs: dict[uuid.UUID, tuple[str, JobView]] = {}
        for event in self.consumes.stored if self.consumes is not None else ():
            if isinstance(event, JobRequested):
                view = pending_view(event)
                status = self.statuses.get(event.job_id, view.status)
                jobs[event.job_id] = (event.user_id, msgspec.structs.replace(view, status=status))
        return {**jobs, **self._jobs}

    async def get_job(self, request: GetJob) -> JobReply:
        self.asked.append(request)
        self._check("job-store")
        owner, view = self._all().get(request.job_id, ("", None))
        return JobReply(job=view if owner == request.user_id else None)

    async def list_jobs(self, request: ListJobs) -> JobPage:
        self.listed.append(request)
        self._check("job-store")
        cursor = request.cursor or "0"
        if not cursor.isdigit():
            raise BadCursor("made for other filters")
        views = [
            view
            for owner, view in reversed(self._all().values())
            if owner == request.user_id
            and (not request.statuses or view.status in request.statuses)
        ]
        start = int(cursor)
        end = start + min(request.limit, self.page_size)
        items = [msgspec.convert(msgspec.to_builtins(v), JobSummary) for v in views[start:end]]
        return JobPage(items=items, next_cursor=str(end) if end < len(views) else None)

    async def job_history(self, request: GetJobHistory) -> JobHistory:
        self.histories_asked.append(request)
        self._check("job-store")
        cursor = request.cursor or "0"
        # The job-store's rule (`job_store.reads._history_after`): at most 9 decimal digits.
        if not cursor.isdecimal() or len(cursor) > 9:
            raise BadCursor("not a cursor of this history")
        owner, view = self._all().get(request.job_id, ("", None))
        if view is None or owner != request.user_id:
            return JobHistory(entries=None)
        entries = self.histories.get(request.job_id) or [requested_entry(view)]
        after = [e for e in entries if e.seq > int(cursor)]
        kept = after[: request.limit]
        more = len(after) > len(kept)
        return JobHistory(
            entries=kept, truncated=more, next_cursor=str(kept[-1].seq) if more else None
        )


def requested_entry(view: JobView) -> JobHistoryEntry:
    """The first entry of every job's history, as the job-store records it."""
    return JobHistoryEntry(
        seq=1,
        kind="requested",
        occurred_at=view.created_at,
        recorded_at=view.created_at,
        source="gateway",
        message_id=f"{view.job_id}:requested",
        summary={"to": "pending"},
    )


@dataclass
class FakeIdempotencyKeys(Failing):
    """A compare-and-set store like a KV bucket: every write bumps the revision."""

    records: dict[str, StoredRecord] = field(default_factory=dict)
    revision: int = 0
    reads: int = 0  # so far: a test waits on them instead of sleeping

    async def read(self, slot: str) -> StoredRecord | None:
        self._check("KV")
        self.reads += 1
        return self.records.get(slot)

    async def create(self, slot: str, record: IdempotencyRecord) -> int | None:
        self._check("KV")
        if slot in self.records:
            return None
        return self._write(slot, record)

    async def update(self, slot: str, record: IdempotencyRecord, revision: int) -> int | None:
        self._check("KV")
        stored = self.records.get(slot)
        if stored is None or stored.revision != revision:
            return None
        return self._write(slot, record)

    def _write(self, slot: str, record: IdempotencyRecord) -> int:
        self.revision += 1
        self.records[slot] = StoredRecord(record, self.revision)
        return self.revision


@dataclass
class FakeBudgets(Failing):
    """The job-store's budgets over memory, as the contract has them: a reservation per job id
    (asked again: admitted, nothing more held), held against the user's month and everyone's
    day; `spent` counts as held too (ended jobs' costs, by user). `report` is what `usage`
    answers, with the month's budget filled in when a limit is asked for."""

    reservations: dict[uuid.UUID, ReserveBudget] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    asked: list[ReserveBudget] = field(default_factory=list)
    released: list[ReleaseBudget] = field(default_factory=list)
    usages: list[GetUsage] = field(default_factory=list)
    report: UsageReport = field(default_factory=lambda: UsageReport(by_type={}, by_day={}))

    def _held(self, request: ReserveBudget, scope: BudgetScope) -> int:
        if scope == "user":
            month = month_start(request.at.date())
            return self.spent.get(request.user_id, 0) + sum(
                r.amount_micros
                for r in self.reservations.values()
                if r.user_id == request.user_id and month_start(r.at.date()) == month
            )
        day = request.at.date()
        return sum(r.amount_micros for r in self.reservations.values() if r.at.date() == day)

    async def reserve(self, request: ReserveBudget) -> BudgetDecision:
        self.asked.append(request)
        self._check("job-store")
        if request.job_id in self.reservations:
            return BudgetDecision(admitted=True)
        limits: list[tuple[BudgetScope, int | None]] = [
            ("user", request.user_limit_micros),
            ("global", request.global_limit_micros),
        ]
        for scope, limit in limits:
            held = self._held(request, scope)
            if limit is not None and held + request.amount_micros > limit:
                remaining = max(0, limit - held)
                return BudgetDecision(
                    admitted=False, exceeded=scope, limit_micros=limit, remaining_micros=remaining
                )
        self.reservations[request.job_id] = request
        return BudgetDecision(admitted=True)

    async def release(self, request: ReleaseBudget) -> None:
        self._check("job-store")
        self.released.append(request)
        self.reservations.pop(request.job_id, None)

    async def usage(self, request: GetUsage) -> UsageReport:
        self.usages.append(request)
        self._check("job-store")
        if request.limit_micros is None:
            return self.report
        month = month_start(request.today)
        reserved = sum(
            r.amount_micros
            for r in self.reservations.values()
            if r.user_id == request.user_id and month_start(r.at.date()) == month
        )
        state = BudgetState(
            period_start=month,
            limit_micros=request.limit_micros,
            spent_micros=self.spent.get(request.user_id, 0),
            reserved_micros=reserved,
        )
        return msgspec.structs.replace(self.report, budget=state)


@dataclass
class FakeJobSystem:
    """Every port of the handlers at once, the job-store consuming the stream: what an HTTP
    test builds the gateway over. `down` and `broken` apply to all of them."""

    stream: FakeJobsStream = field(default_factory=FakeJobsStream)
    keys: FakeIdempotencyKeys = field(default_factory=FakeIdempotencyKeys)
    budgets: FakeBudgets = field(default_factory=FakeBudgets)
    store: FakeJobStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = FakeJobStore(consumes=self.stream)

    def _set(self, name: str, value: bool) -> None:
        for fake in (self.stream, self.keys, self.store, self.budgets):
            setattr(fake, name, value)

    @property
    def down(self) -> bool:
        return self.stream.down

    @down.setter
    def down(self, value: bool) -> None:
        self._set("down", value)

    @property
    def broken(self) -> bool:
        return self.stream.broken

    @broken.setter
    def broken(self, value: bool) -> None:
        self._set("broken", value)

    @property
    def published(self) -> list[JobEvent]:
        return self.stream.published

    def reset(self) -> None:
        self.stream.stored.clear()
        self.stream.published.clear()
        self.budgets.reservations.clear()
        self.down = self.broken = False


@dataclass
class FakeJwksSource:
    """The JWKS endpoint: serves `document`, or fails while `down`; counts the fetches and
    holds them while `gate` is clear."""

    document: bytes
    down: bool = False
    fetches: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    async def fetch(self) -> bytes:
        self.fetches += 1
        await self.gate.wait()
        if self.down:
            raise JwksFetchError("connection refused")
        return self.document


@dataclass
class RefusingAdmission:
    """An open-jobs limit that refuses while `refuse` is set; records each release."""

    refuse: bool = True
    released: list[uuid.UUID | None] = field(default_factory=list)

    async def hold(self, user_id: str) -> None:
        if self.refuse:
            raise LimitExceeded("too many open jobs", 5, "open_jobs")

    def release(self, user_id: str, job_id: uuid.UUID | None) -> None:
        self.released.append(job_id)


@dataclass
class RecordingObserver:
    """The `GatewayObserver` the metrics adapter stands behind: every fact, in order."""

    facts: list[tuple[str, ...]] = field(default_factory=list)

    def job_admitted(self, job_type: str) -> None:
        self.facts.append(("job_admitted", job_type))

    def idempotent_replay(self) -> None:
        self.facts.append(("idempotent_replay",))

    def idempotency_conflict(self, reason: ConflictReason) -> None:
        self.facts.append(("idempotency_conflict", reason))

    def limited(self, limit: str) -> None:
        self.facts.append(("limited", limit))

    def streams_full(self) -> None:
        self.facts.append(("streams_full",))

    def budget_exceeded(self, scope: BudgetScope) -> None:
        self.facts.append(("budget_exceeded", scope))

    def job_read(self, source: ReadSource) -> None:
        self.facts.append(("job_read", source))

    def stream_opened(self) -> None:
        self.facts.append(("stream_opened",))

    def output_wanted(self, published: int, failed: int) -> None:
        self.facts.append(("output_wanted", str(published), str(failed)))

    def missed_change(self) -> None:
        self.facts.append(("missed_change",))


@dataclass
class ManualClock:
    """A wall clock that moves only when a test sets `now`."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Ticks:
    """A monotonic clock in seconds that moves only when a test sets `now`."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def job_view(job_id: uuid.UUID, version: int, status: JobStatus = "processing") -> JobView:
    """A job of the resync tests at `version`; a succeeded one has its output and end."""
    ended = status == "succeeded"
    return JobView(
        job_id=job_id,
        type="script_generation",
        status=status,
        version=version,
        input={},
        output="done" if ended else None,
        error=None,
        prediction_id="p1",
        created_at=RESYNC_T0,
        updated_at=RESYNC_T0,
        completed_at=RESYNC_T0 if ended else None,
    )


RESYNC_T0 = datetime(2025, 3, 1, tzinfo=UTC)
