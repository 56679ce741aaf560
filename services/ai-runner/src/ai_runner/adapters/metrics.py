"""The ai-runner's `/metrics`: predictions created, retries by reason, adoptions, orphans and
cancellations; the `RunnerObserver` port over prometheus_client's default registry, which the
runtime's admin port serves."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

CREATED: Final = Counter("ai_runner_predictions_created", "Predictions created on Replicate")
RETRIES: Final = Counter(
    "ai_runner_create_retries",
    "Creates put off for later, by reason "
    "(throttled, ambiguous, transient, needs_operator, binding_wait)",
    ["reason"],
)
ADOPTED: Final = Counter(
    "ai_runner_predictions_adopted",
    "Predictions whose create answer was lost, found through the job's events and kept",
)
ORPHANS_CANCELED: Final = Counter(
    "ai_runner_orphans_canceled", "Second predictions of a job, canceled"
)
CANCELLATIONS: Final = Counter(
    "ai_runner_cancellations",
    "Cancel requests carried out, by stage (before_creation, prediction_canceled)",
    ["stage"],
)
ATTEMPTS_EXHAUSTED: Final = Counter(
    "ai_runner_attempts_exhausted", "Jobs failed because their creates kept failing"
)


class PrometheusObserver:
    """The `RunnerObserver` port as Prometheus counters."""

    def created(self) -> None:
        CREATED.inc()

    def retried(self, reason: str) -> None:
        RETRIES.labels(reason).inc()

    def adopted(self) -> None:
        ADOPTED.inc()

    def orphan_canceled(self) -> None:
        ORPHANS_CANCELED.inc()

    def canceled(self, before_creation: bool) -> None:
        CANCELLATIONS.labels("before_creation" if before_creation else "prediction_canceled").inc()

    def attempts_exhausted(self) -> None:
        ATTEMPTS_EXHAUSTED.inc()
