"""The ai-runner's `/metrics`, by job type: predictions created, retries by reason, waits for the
shared limits, predictions in flight, adoptions, orphans, cancellations, deadlines and what the
reconciler learnt, and the relay's streams, appends, reconnects, progress and fallback reads:
the `RunnerObserver` and `RelayObserver` ports over prometheus_client's default registry, which
the runtime's admin port serves."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

CREATED: Final = Counter(
    "ai_runner_predictions_created", "Predictions created on Replicate", ["job_type"]
)
RETRIES: Final = Counter(
    "ai_runner_create_retries",
    "Creates put off for later, by reason "
    "(throttled, ambiguous, transient, needs_operator, binding_wait)",
    ["job_type", "reason"],
)
LIMIT_WAITS: Final = Counter(
    "ai_runner_limit_waits",
    "Waits for a limit shared by all replicas (creations, in_flight); job_type `any` when the "
    "consumer held back fetching",
    ["job_type", "limit"],
)
IN_FLIGHT: Final = Gauge(
    "ai_runner_predictions_in_flight",
    "Predictions in flight across all replicas, as this replica last saw the shared count",
    ["job_type"],
)
ADOPTED: Final = Counter(
    "ai_runner_predictions_adopted",
    "Predictions whose create answer was lost, found through the job's events and kept",
    ["job_type"],
)
ORPHANS_CANCELED: Final = Counter(
    "ai_runner_orphans_canceled", "Second predictions of a job, canceled", ["job_type"]
)
CANCELLATIONS: Final = Counter(
    "ai_runner_cancellations",
    "Cancel requests carried out, by stage (before_creation, prediction_canceled)",
    ["job_type", "stage"],
)
ATTEMPTS_EXHAUSTED: Final = Counter(
    "ai_runner_attempts_exhausted", "Jobs failed because their creates kept failing", ["job_type"]
)
DEADLINES: Final = Counter(
    "ai_runner_deadlines_exceeded",
    "Jobs past their own deadline, by stage (before_creation, while_running)",
    ["job_type", "stage"],
)
RECONCILED: Final = Counter(
    "ai_runner_reconciled",
    "Predictions the reconciler or poller asked Replicate about, by what it learnt "
    "(completed, started, running, unknown, error)",
    ["job_type", "outcome"],
)


RELAY_STREAMS: Final = Gauge("ai_runner_relay_streams", "Prediction streams being relayed now")
RELAY_ENDS: Final = Counter(
    "ai_runner_relay_streams_ended",
    "Streams no longer relayed, by outcome (done, canceled, job_ended, gone, gave_up, job_over, "
    "no_stream, stopped, failed); gone and gave_up are streams given up, no_stream predictions "
    "without a known stream URL (adopted): those three are read instead while they run",
    ["outcome"],
)
RELAY_APPENDS: Final = Counter(
    "ai_runner_relay_appends", "Appends of streamed text to the output log"
)
RELAY_CHARS: Final = Counter(
    "ai_runner_relay_characters", "Characters of streamed text appended to the output log"
)
RELAY_RECONNECTS: Final = Counter(
    "ai_runner_relay_reconnects",
    "Stream connections made again after one ended early, by reason (cut, idle, error)",
    ["reason"],
)
RELAY_PROGRESS: Final = Counter(
    "ai_runner_relay_progress",
    "Progress messages of relayed streams, by outcome (sent, failed)",
    ["outcome"],
)
RELAY_FALLBACKS: Final = Counter(
    "ai_runner_relay_fallbacks_ended",
    "Predictions read instead of their lost stream, by why reading stopped "
    "(ended, gone, gave_up, job_over)",
    ["outcome"],
)


class PrometheusObserver:
    """The `RunnerObserver` and `RelayObserver` ports as Prometheus metrics."""

    def created(self, job_type: str) -> None:
        CREATED.labels(job_type).inc()

    def retried(self, job_type: str, reason: str) -> None:
        RETRIES.labels(job_type, reason).inc()

    def limit_waited(self, job_type: str, limit: str) -> None:
        LIMIT_WAITS.labels(job_type, limit).inc()

    def adopted(self, job_type: str) -> None:
        ADOPTED.labels(job_type).inc()

    def orphan_canceled(self, job_type: str) -> None:
        ORPHANS_CANCELED.labels(job_type).inc()

    def canceled(self, job_type: str, before_creation: bool) -> None:
        stage = "before_creation" if before_creation else "prediction_canceled"
        CANCELLATIONS.labels(job_type, stage).inc()

    def attempts_exhausted(self, job_type: str) -> None:
        ATTEMPTS_EXHAUSTED.labels(job_type).inc()

    def deadline_exceeded(self, job_type: str, stage: str) -> None:
        DEADLINES.labels(job_type, stage).inc()

    def reconciled(self, job_type: str, outcome: str) -> None:
        RECONCILED.labels(job_type, outcome).inc()

    def in_flight(self, job_type: str, count: int) -> None:
        IN_FLIGHT.labels(job_type).set(count)

    def stream_opened(self) -> None:
        RELAY_STREAMS.inc()

    def stream_closed(self, outcome: str) -> None:
        RELAY_STREAMS.dec()
        RELAY_ENDS.labels(outcome).inc()

    def appended(self, chars: int) -> None:
        RELAY_APPENDS.inc()
        RELAY_CHARS.inc(chars)

    def reconnected(self, reason: str) -> None:
        RELAY_RECONNECTS.labels(reason).inc()

    def progress_sent(self, ok: bool) -> None:
        RELAY_PROGRESS.labels("sent" if ok else "failed").inc()

    def fallback_ended(self, outcome: str) -> None:
        RELAY_FALLBACKS.labels(outcome).inc()
