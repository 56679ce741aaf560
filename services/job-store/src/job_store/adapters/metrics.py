"""The job-store's `/metrics`: events applied by kind and outcome, apply latency, waits.

The `ApplyObserver` port over prometheus_client's default registry, which the runtime's admin
port serves.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

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
WAITS: Final = Counter(
    "job_store_waits",
    "Events handed back to come again, by reason (job_not_yet_known, result_missing)",
    ["reason"],
)
PARKED: Final = Counter(
    "job_store_parked",
    "Messages parked in the dead-letter stream instead of being applied, by reason",
    ["reason"],
)


class PrometheusObserver:
    """The `ApplyObserver` port: counters and a latency histogram per event kind."""

    def applied(self, kind: str, outcome: str, seconds: float) -> None:
        EVENTS_APPLIED.labels(kind, outcome).inc()
        APPLY_SECONDS.labels(kind).observe(seconds)

    def waited(self, reason: str) -> None:
        WAITS.labels(reason).inc()
