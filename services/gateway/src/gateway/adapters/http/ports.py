"""What the HTTP API is built over, in one object built by `__main__`: the handlers'
dependencies, and what only the HTTP side needs (token verification, the request rate, the
body limit, the answers kept in memory, the event hub and stream caps, CORS and the demo)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from gateway import handlers
from gateway.auth import TokenVerifier
from gateway.budgets import Spending
from gateway.cache import FinishedJobs
from gateway.hub import Hub
from gateway.jobviews import JobViews
from gateway.limits import OpenJobs, RequestRate
from gateway.output import NoOutputLog, OutputReader
from gateway.ports import (
    Clock,
    EventBus,
    GatewayObserver,
    IdempotencyKeys,
    JobStore,
    NoObserver,
    RequestedLog,
)
from gateway.streams import OpenStreams

DEFAULT_IDEMPOTENCY: Final = handlers.IdempotencyPolicy()


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class GatewayPorts:
    """What the HTTP API is built over: token verification, the ports, the body limit."""

    verifier: TokenVerifier
    bus: EventBus
    store: JobStore
    requested: RequestedLog
    max_body_bytes: int
    clock: Clock = _utc_now
    # Origins a browser may call the API from (`CORS_ORIGINS`); empty: no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # Where `Idempotency-Key`s are kept; `None`: the header is validated, then ignored.
    keys: IdempotencyKeys | None = None
    idempotency: handlers.IdempotencyPolicy = DEFAULT_IDEMPOTENCY
    # `USER_REQUESTS_PER_S` and `USER_MAX_OPEN_JOBS`; `None`: off.
    rate: RequestRate | None = None
    open_jobs: OpenJobs | None = None
    # The budgets (`USER_BUDGET_USD`, `GLOBAL_BUDGET_USD_PER_DAY`, a token's budget claim) and
    # the job-store keeping them and the usage; `None`: no budgets, `/api/usage` answers 503.
    spending: Spending | None = None
    # Answers of finished jobs; `None`: every read asks the job-store.
    finished: FinishedJobs | None = None
    # Running jobs known from announcements and replies; `None`: every read asks the job-store.
    views: JobViews | None = None
    # Fans job changes and progress out to the event streams; `None`: a hub nobody feeds
    # (streams then send the current state and keepalives only).
    hub: Hub | None = None
    # The output log `/output` reads while a prediction runs; default: none (the text then
    # comes from the job's stored `output` once it ends).
    output_log: OutputReader = field(default_factory=NoOutputLog)
    # The open streams, counted against `USER_MAX_STREAMS` and `MAX_STREAMS` (default: counted,
    # no limit).
    streams: OpenStreams = field(default_factory=OpenStreams)
    # Serve the demo page at `/` (and the JavaScript client it is built on).
    demo_page: bool = False
    # Counts what the metrics follow (admissions, replays, refusals, reads, streams).
    observer: GatewayObserver = field(default_factory=NoObserver)
    # The handlers' share of the above, built once.
    deps: handlers.Dependencies = field(init=False)

    def __post_init__(self) -> None:
        deps = handlers.Dependencies(
            bus=self.bus,
            store=self.store,
            requested=self.requested,
            clock=self.clock,
            keys=self.keys,
            idempotency=self.idempotency,
            admission=self.open_jobs,
            spending=self.spending,
        )
        object.__setattr__(self, "deps", deps)
