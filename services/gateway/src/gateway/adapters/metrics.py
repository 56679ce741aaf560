"""The gateway's Prometheus counters (default registry, served on the admin port's
`/metrics`): admissions, idempotent replays and conflicts, per-user limit refusals, and the
finished-jobs cache's hits."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

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
STREAMS_FULL: Final = Counter(
    "gateway_streams_full_total", "Streams refused 503: the process holds MAX_STREAMS"
)
CACHE_READS: Final = Counter(
    "gateway_finished_job_reads_total",
    "Reads of a job by where the answer came from",
    ["source"],  # cache (finished jobs), job_view (running jobs), job_store
)
STREAMS_OPENED: Final = Counter("gateway_event_streams_opened_total", "Event streams opened")
# Set by `__main__`: how many streams are open (the count `USER_MAX_STREAMS` and `MAX_STREAMS`
# limit, event and output streams alike), how many were dropped for falling behind (the hub).
OPEN_STREAMS: Final = Gauge(
    "gateway_event_streams_open", "Event and output streams open now (MAX_STREAMS counts these)"
)
DROPPED_STREAMS: Final = Gauge(
    "gateway_event_streams_dropped", "Event streams ended because their client fell behind"
)

# Label children of the hot paths, looked up once: `labels()` hashes and locks on every call.
CACHE_HITS: Final = CACHE_READS.labels("cache")
STORE_READS: Final = CACHE_READS.labels("job_store")
VIEW_READS: Final = CACHE_READS.labels("job_view")
_ADMITTED_BY_TYPE: Final[dict[str, Counter]] = {}


def admitted(job_type: str) -> Counter:
    """The `gateway_jobs_admitted_total` child of `job_type`."""
    child = _ADMITTED_BY_TYPE.get(job_type)
    if child is None:
        child = _ADMITTED_BY_TYPE[job_type] = JOBS_ADMITTED.labels(job_type)
    return child
