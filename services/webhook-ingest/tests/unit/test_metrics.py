"""The `WebhookObserver` as `/metrics` shows it: one counter by reason, one gauge."""

from __future__ import annotations

from prometheus_client import REGISTRY

from webhook_ingest.adapters.metrics import PrometheusObserver


def webhooks(reason: str) -> float:
    return REGISTRY.get_sample_value("webhook_ingest_webhooks_total", {"reason": reason}) or 0.0


def test_each_fact_counts_under_its_reason() -> None:
    reasons = ("stored", "duplicate", "parked", "bad_signature", "bus_unavailable")
    before = {reason: webhooks(reason) for reason in reasons}
    observer = PrometheusObserver()
    observer.stored(duplicate=False)
    observer.stored(duplicate=True)
    observer.parked()
    observer.refused("bad_signature")
    observer.not_stored("bus_unavailable")
    assert {reason: webhooks(reason) - before[reason] for reason in reasons} == dict.fromkeys(
        reasons, 1.0
    )


def test_large_bodies_in_progress_is_the_last_count_reported() -> None:
    observer = PrometheusObserver()
    observer.large_bodies(2)
    observer.large_bodies(1)
    assert REGISTRY.get_sample_value("webhook_ingest_large_bodies_in_progress") == 1.0
