"""The job-store's `/metrics`: events applied by kind and outcome, apply latency, waits, batch
sizes, purges, the consumer's lag, jobs past their deadline, the time from a job's admission to
its result, spend by job type and reservations the sweep released.

The `JobStoreObserver` port over prometheus_client's default registry, which the runtime's
admin port serves; nothing else touches these metrics.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from jobs_proto.spend import MICROS_PER_USD

EVENTS_APPLIED: Final = Counter(
    "job_store_events",
    "Events the job-store handled, by kind and outcome (changed, unchanged, deferred)",
    ["kind", "outcome"],
)
APPLY_SECONDS: Final = Histogram(
    "job_store_apply_seconds",
    "Time to apply one event (transaction, history, announcement), by kind",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
# What a user waits for: from admission (`job.requested`) to the job's terminal status, both
# by the events' own clocks; the dashboard's "time to result" and "jobs ended".
TIME_TO_RESULT: Final = Histogram(
    "job_store_time_to_result_seconds",
    "Time from a job's admission to its terminal status, by job type and status",
    ["job_type", "status"],
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0),
)
WAITS: Final = Counter(
    "job_store_waits",
    "Events handed back to come again, by reason (job_not_yet_known, result_missing)",
    ["reason"],
)
BATCH_SIZE: Final = Histogram(
    "job_store_batch_size",
    "Events committed per transaction; mode batch (a whole batch) or single (one event of a"
    " batch that failed and was retried one by one)",
    ["mode"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
PURGES_PUBLISHED: Final = Counter(
    "job_store_purges_published",
    "Purge events the retention pass published (finished jobs past JOB_RETENTION_S)",
)
CONSUMER_LAG: Final = Gauge(
    "job_store_consumer_lag",
    "Events in the stream the job-store's durable consumer has not been handed yet"
    " (num_pending), sampled every LAG_SAMPLE_S",
)
CONSUMER_ACK_PENDING: Final = Gauge(
    "job_store_consumer_ack_pending",
    "Events handed to the job-store and not yet acknowledged (num_ack_pending), sampled",
)
JOBS_PAST_DEADLINE: Final = Gauge(
    "job_store_jobs_past_deadline",
    "Jobs still pending or processing after their type's deadline (stuck), by status, sampled"
    " every LAG_SAMPLE_S",
    ["status"],
)
PARKED: Final = Counter(
    "job_store_parked",
    "Messages parked in the dead-letter stream instead of being applied, by reason",
    ["reason"],
)

# Names pinned: a Grafana dashboard and an alert query `jobs_spend_usd_total` (prometheus_client
# adds `_total` to a counter's name).
SPEND_USD: Final = Counter(
    "jobs_spend_usd",
    "What ended jobs cost at their admission price, in dollars, counted when the job-store"
    " settles them (a job's end, or metrics reported after it), by job type",
    ["job_type"],
)
RESERVATIONS_RELEASED: Final = Counter(
    "jobs_budget_reservations_released",
    "Budget reservations the sweep released because their job never came (older than"
    " RESERVATION_GRACE_S with no job)",
)


class PrometheusObserver:
    """The `JobStoreObserver` port: counters and a latency histogram per event kind, purges,
    parked messages and the consumer's lag.

    Each metric's child per label values is looked up once: `labels()` takes a lock and builds
    a key on every call, several times per event otherwise.
    """

    def __init__(self) -> None:
        self._applied: dict[tuple[str, str], Counter] = {}
        self._seconds: dict[str, Histogram] = {}
        self._batches: dict[str, Histogram] = {}

    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        counter = self._applied.get((kind, outcome))
        if counter is None:
            counter = self._applied[(kind, outcome)] = EVENTS_APPLIED.labels(kind, outcome)
        counter.inc()
        timer = self._seconds.get(kind)
        if timer is None:
            timer = self._seconds[kind] = APPLY_SECONDS.labels(kind)
        timer.observe(seconds)

    def job_ended(self, job_type: str, status: str, seconds: float) -> None:
        TIME_TO_RESULT.labels(job_type, status).observe(seconds)

    def waited(self, reason: str) -> None:
        WAITS.labels(reason).inc()

    def committed(self, events: int, mode: str) -> None:
        sizes = self._batches.get(mode)
        if sizes is None:
            sizes = self._batches[mode] = BATCH_SIZE.labels(mode)
        sizes.observe(events)

    def purges_published(self, jobs: int) -> None:
        PURGES_PUBLISHED.inc(jobs)

    def parked(self, reason: str) -> None:
        PARKED.labels(reason).inc()

    def consumer_sampled(self, pending: int, ack_pending: int) -> None:
        CONSUMER_LAG.set(pending)
        CONSUMER_ACK_PENDING.set(ack_pending)

    def past_deadline(self, pending: int, processing: int) -> None:
        """The stuck jobs' gauge, as last sampled (`PostgresJobStore.past_deadline`)."""
        JOBS_PAST_DEADLINE.labels("pending").set(pending)
        JOBS_PAST_DEADLINE.labels("processing").set(processing)

    def spent(self, job_type: str, micros: int) -> None:
        # Dollars as floats only here, for Prometheus; every sum that matters is integer.
        SPEND_USD.labels(job_type).inc(micros / MICROS_PER_USD)

    def reservations_released(self, count: int) -> None:
        RESERVATIONS_RELEASED.inc(count)
