"""The `GatewayObserver` port over Prometheus (default registry, served on the admin port's
`/metrics`): admissions, idempotent replays and conflicts, per-user limit and budget refusals,
reads by source, the open streams, the `OutputWanted` messages that keep the relay reading, and
the job changes the resync of open streams found unannounced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from gateway.ports import ConflictReason, ReadSource
from jobs_proto.spend import BudgetScope
from jobs_runtime.red import DURATION_BUCKETS, DURATION_LABELS, REQUEST_LABELS

JOBS_ADMITTED: Final = Counter(
    "gateway_jobs_admitted_total", "Jobs admitted (their JobRequested stored)", ["job_type"]
)
IDEMPOTENT_REPLAYS: Final = Counter(
    "gateway_idempotent_replays_total", "Creates answered with the first answer of their key"
)
IDEMPOTENCY_CONFLICTS: Final = Counter(
    "gateway_idempotency_conflicts_total",
    "Creates refused 409 over their Idempotency-Key",
    ["reason"],  # reused (another body), in_progress (still being admitted)
)
LIMITED: Final = Counter(
    "gateway_limited_total",
    "Requests refused 429 by a per-user limit",
    ["limit"],  # rate, open_jobs, streams
)
BUDGET_EXCEEDED: Final = Counter(
    "gateway_budget_exceeded_total",
    "Jobs refused 402: admitting them would pass a budget",
    ["scope"],  # user (the user's month), global (everyone's day)
)
STREAMS_FULL: Final = Counter(
    "gateway_streams_full_total", "Streams refused 503: the process holds MAX_STREAMS"
)
CACHE_READS: Final = Counter(
    "gateway_finished_job_reads_total",
    "Reads of a job by where the answer came from",
    ["source"],  # cache (finished jobs), job_view (running jobs), job_store
)
STREAMS_OPENED: Final = Counter("gateway_event_streams_opened_total", "Event streams opened")
# Set by `PrometheusObserver.watch_streams`: how many streams are open (the count
# `USER_MAX_STREAMS` and `MAX_STREAMS` limit, event and output streams alike), how many were
# dropped for falling behind (the hub).
OPEN_STREAMS: Final = Gauge(
    "gateway_event_streams_open", "Event and output streams open now (MAX_STREAMS counts these)"
)
DROPPED_STREAMS: Final = Gauge(
    "gateway_event_streams_dropped", "Event streams ended because their client fell behind"
)
OUTPUT_WANTED: Final = Counter(
    "gateway_output_wanted_published_total",
    "OutputWanted messages published (a running job's text is read here)",
)
OUTPUT_WANTED_FAILED: Final = Counter(
    "gateway_output_wanted_failed_total",
    "OutputWanted messages not published (NATS disconnected or refusing)",
)
MISSED_CHANGES: Final = Counter(
    "gateway_missed_changes",
    "Job changes never announced to this process, found by the resync of open streams"
    " (SSE_RESYNC_S) and handed to them",
)
WATCHED_JOBS: Final = Gauge(
    "gateway_output_watched_jobs", "Running jobs whose text a stream of this process reads"
)
# The public API's RED metrics (`jobs_runtime.red`): every request, the lean paths' included.
HTTP_REQUESTS: Final = Counter(
    "gateway_http_requests",
    "Public HTTP requests by route template, method and status",
    REQUEST_LABELS,
)
HTTP_SECONDS: Final = Histogram(
    "gateway_http_request_duration_seconds",
    "Time to the start of the response (for event and output streams: to open them), by route"
    " template and method",
    DURATION_LABELS,
    buckets=DURATION_BUCKETS,
)

# Label children of the hot paths, looked up once: `labels()` hashes and locks on every call.
_READS: Final = {
    source: CACHE_READS.labels(source) for source in ("cache", "job_view", "job_store")
}
_BUDGETS: Final = {scope: BUDGET_EXCEEDED.labels(scope) for scope in ("user", "global")}
_CONFLICTS: Final = {
    reason: IDEMPOTENCY_CONFLICTS.labels(reason) for reason in ("reused", "in_progress")
}


class PrometheusObserver:
    """Counts each fact in the process's default registry."""

    def __init__(self) -> None:
        self._admitted_by_type: dict[str, Counter] = {}

    def watch_streams(self, open_now: Callable[[], int], dropped: Callable[[], int]) -> None:
        """The stream gauges, read when scraped: open streams (what the caps count) and
        streams dropped for falling behind (the hub's count)."""
        OPEN_STREAMS.set_function(open_now)
        DROPPED_STREAMS.set_function(dropped)

    def watch_wanted(self, watched: Callable[[], int]) -> None:
        """The watched jobs' gauge, read when scraped (the hub's watched set)."""
        WATCHED_JOBS.set_function(watched)

    def job_admitted(self, job_type: str) -> None:
        child = self._admitted_by_type.get(job_type)
        if child is None:
            child = self._admitted_by_type[job_type] = JOBS_ADMITTED.labels(job_type)
        child.inc()

    def idempotent_replay(self) -> None:
        IDEMPOTENT_REPLAYS.inc()

    def idempotency_conflict(self, reason: ConflictReason) -> None:
        _CONFLICTS[reason].inc()

    def limited(self, limit: str) -> None:
        LIMITED.labels(limit).inc()

    def streams_full(self) -> None:
        STREAMS_FULL.inc()

    def budget_exceeded(self, scope: BudgetScope) -> None:
        _BUDGETS[scope].inc()

    def job_read(self, source: ReadSource) -> None:
        _READS[source].inc()

    def stream_opened(self) -> None:
        STREAMS_OPENED.inc()

    def missed_change(self) -> None:
        MISSED_CHANGES.inc()

    def output_wanted(self, published: int, failed: int) -> None:
        if published:
            OUTPUT_WANTED.inc(published)
        if failed:
            OUTPUT_WANTED_FAILED.inc(failed)
