"""webhook-ingest's `/metrics`: webhooks by what became of them, output texts not offered to the
output log, and large bodies in progress.

The `WebhookObserver` port over prometheus_client's default registry, which the runtime's admin
port serves.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from jobs_runtime.red import DURATION_BUCKETS, DURATION_LABELS, REQUEST_LABELS

# `reason`: `stored`, `duplicate` or `parked` for a `200`, else why the request was refused or
# its webhook not stored.
WEBHOOKS: Final = Counter(
    "webhook_ingest_webhooks", "Webhook requests, by what became of them", ["reason"]
)
OUTPUT_NOT_OFFERED: Final = Counter(
    "webhook_ingest_output_offers_failed",
    "Output webhooks whose text could not be offered to the output log (answered all the same)",
)
LARGE_BODIES: Final = Gauge(
    "webhook_ingest_large_bodies_in_progress", "Bodies over 1 MiB being received or held now"
)

# The public endpoint's RED metrics (`jobs_runtime.red`).
HTTP_REQUESTS: Final = Counter(
    "webhook_ingest_http_requests",
    "Public HTTP requests by route template, method and status",
    REQUEST_LABELS,
)
HTTP_SECONDS: Final = Histogram(
    "webhook_ingest_http_request_duration_seconds",
    "Time to the start of the response, by route template and method",
    DURATION_LABELS,
    buckets=DURATION_BUCKETS,
)


class PrometheusObserver:
    """The `WebhookObserver` port as a counter by reason and a gauge."""

    def stored(self, duplicate: bool) -> None:
        WEBHOOKS.labels("duplicate" if duplicate else "stored").inc()

    def parked(self) -> None:
        WEBHOOKS.labels("parked").inc()

    def refused(self, reason: str) -> None:
        WEBHOOKS.labels(reason).inc()

    def not_stored(self, reason: str) -> None:
        WEBHOOKS.labels(reason).inc()

    def output_not_offered(self) -> None:
        OUTPUT_NOT_OFFERED.inc()

    def large_bodies(self, in_progress: int) -> None:
        LARGE_BODIES.set(in_progress)
