"""The webhook URL a prediction is created with: the configured URL plus `job=<jobId>` (and,
traced, `traceparent=<it>`)."""

from urllib.parse import parse_qs, urlsplit

import pytest

from ai_runner.handlers import webhook_url
from jobs_proto.replicate import webhook_job_id, webhook_traceparent

JOB = "0b7c6d0e-5a3f-4f57-9a53-2f1d3c7e9b21"


def test_the_job_is_added_as_the_query() -> None:
    url = webhook_url("https://hooks.example.com/api/webhooks/replicate", JOB)
    assert url == f"https://hooks.example.com/api/webhooks/replicate?job={JOB}"
    assert parse_qs(urlsplit(url).query) == {"job": [JOB]}


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8001/hook?env=dev", f"http://127.0.0.1:8001/hook?env=dev&job={JOB}"),
        # Order and encoding of what is there are kept byte for byte.
        (
            "https://h.example/hook?b=2&a=x%20y&c=a+b&flag",
            f"https://h.example/hook?b=2&a=x%20y&c=a+b&flag&job={JOB}",
        ),
        # A trailing `?` or `&` leaves no empty parameter behind.
        ("https://h.example/hook?", f"https://h.example/hook?job={JOB}"),
        ("https://h.example/hook?a=1&", f"https://h.example/hook?a=1&job={JOB}"),
    ],
)
def test_an_existing_query_is_kept(base: str, expected: str) -> None:
    assert webhook_url(base, JOB) == expected


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        (
            "HTTPS://User:pw@Hooks.Example.com:8443",
            f"HTTPS://User:pw@Hooks.Example.com:8443?job={JOB}",
        ),
        ("https://h.example/a/b/;p/", f"https://h.example/a/b/;p/?job={JOB}"),
        ("https://h.example/hook#frag", f"https://h.example/hook?job={JOB}#frag"),
        ("https://h.example/hook?x=1#f?g", f"https://h.example/hook?x=1&job={JOB}#f?g"),
    ],
)
def test_the_rest_of_the_url_is_untouched(base: str, expected: str) -> None:
    assert webhook_url(base, JOB) == expected


@pytest.mark.parametrize("stale", ["job=old", "job", "jo%62=old", "job=a&job=b"])
def test_a_job_parameter_already_there_is_replaced(stale: str) -> None:
    url = webhook_url(f"https://h.example/hook?a=1&{stale}&z=2", JOB)
    assert url == f"https://h.example/hook?a=1&z=2&job={JOB}"
    assert parse_qs(urlsplit(url).query)["job"] == [JOB]


@pytest.mark.parametrize(
    "base",
    [
        "https://hooks.example.com/api/webhooks/replicate",
        "https://h.example/hook?b=2&a=x%20y&c=a+b&flag",
        "https://h.example/hook?job=00000000-0000-4000-8000-000000000000",
        "https://h.example/hook?x=1#f?g&job=00000000-0000-4000-8000-000000000000",
    ],
)
def test_webhook_ingest_reads_back_the_job_the_runner_wrote(base: str) -> None:
    """The body's `webhook` field is how webhook-ingest learns the job: writer and reader agree,
    whatever the configured URL already holds."""
    assert str(webhook_job_id(webhook_url(base, JOB))) == JOB


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_traceparent_goes_beside_the_job_and_reads_back() -> None:
    url = webhook_url("https://h.example/hook?env=dev", JOB, TRACEPARENT)
    assert url == f"https://h.example/hook?env=dev&job={JOB}&traceparent={TRACEPARENT}"
    assert str(webhook_job_id(url)) == JOB
    assert webhook_traceparent(url) == TRACEPARENT


def test_a_traceparent_already_in_the_base_is_replaced() -> None:
    base = "https://h.example/hook?traceparent=00-old-old-00&a=1"
    url = webhook_url(base, JOB, TRACEPARENT)
    assert url == f"https://h.example/hook?a=1&job={JOB}&traceparent={TRACEPARENT}"
    assert webhook_traceparent(url) == TRACEPARENT


def test_without_a_trace_the_url_names_the_job_alone() -> None:
    url = webhook_url("https://h.example/hook", JOB, None)
    assert url == f"https://h.example/hook?job={JOB}"
    assert webhook_traceparent(url) is None
