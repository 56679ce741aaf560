"""`PrometheusObserver`: each fact of the `GatewayObserver` port counted under the metric names
and labels the dashboards read (process-wide default registry, so counts are compared before
and after)."""

from collections.abc import Callable

from prometheus_client import REGISTRY

from gateway.adapters.metrics import PrometheusObserver


def counted(name: str, **labels: str) -> Callable[[], float]:
    return lambda: REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_fact_is_counted_under_its_metric() -> None:
    observer = PrometheusObserver()
    facts = [
        (
            lambda: observer.job_admitted("video_outline"),
            counted("gateway_jobs_admitted_total", job_type="video_outline"),
        ),
        (observer.idempotent_replay, counted("gateway_idempotent_replays_total")),
        (
            lambda: observer.idempotency_conflict("in_progress"),
            counted("gateway_idempotency_conflicts_total", reason="in_progress"),
        ),
        (lambda: observer.limited("streams"), counted("gateway_limited_total", limit="streams")),
        (observer.streams_full, counted("gateway_streams_full_total")),
        (
            lambda: observer.budget_exceeded("global"),
            counted("gateway_budget_exceeded_total", scope="global"),
        ),
        (
            lambda: observer.job_read("job_view"),
            counted("gateway_finished_job_reads_total", source="job_view"),
        ),
        (observer.stream_opened, counted("gateway_event_streams_opened_total")),
        (
            lambda: observer.output_wanted(1, 0),
            counted("gateway_output_wanted_published_total"),
        ),
        (lambda: observer.output_wanted(0, 1), counted("gateway_output_wanted_failed_total")),
        (observer.missed_change, counted("gateway_missed_changes_total")),
    ]
    for fact, value in facts:
        before = value()
        fact()
        fact()
        assert value() == before + 2


def test_the_stream_gauges_read_the_counts_when_scraped() -> None:
    open_now = [3]
    PrometheusObserver().watch_streams(lambda: open_now[0], lambda: 7)
    assert REGISTRY.get_sample_value("gateway_event_streams_open") == 3
    open_now[0] = 5
    assert REGISTRY.get_sample_value("gateway_event_streams_open") == 5
    assert REGISTRY.get_sample_value("gateway_event_streams_dropped") == 7


def test_the_watched_jobs_gauge_reads_the_hubs_set_when_scraped() -> None:
    PrometheusObserver().watch_wanted(lambda: 4)
    assert REGISTRY.get_sample_value("gateway_output_watched_jobs") == 4
