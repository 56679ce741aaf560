"""Which of the client's errors fail a job and which are retried (no I/O)."""

from datetime import UTC, datetime

import aiohttp
import httpx
import pytest
from replicate.exceptions import ReplicateError

from ai_runner.adapters.replicate import (
    Throttled,
    cancel_after,
    classify,
    describe,
    seconds_from_detail,
    seconds_from_headers,
)
from ai_runner.ports import PermanentRejection, ReplicateUnavailable

REQUEST = httpx.Request("POST", "http://replicate.test/v1/models/google/gemini-3-pro/predictions")


def refused(status: int | None, title: str = "Title", detail: str = "Detail.") -> ReplicateError:
    return ReplicateError(title=title, detail=detail, status=status)


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_a_refusal_of_the_request_itself_is_permanent(status: int) -> None:
    failure = classify(refused(status, "Input validation failed", "webhook must be an HTTP URL"))
    assert isinstance(failure, PermanentRejection)
    assert str(failure) == "Input validation failed: webhook must be an HTTP URL"


@pytest.mark.parametrize("status", [401, 402, 403])
def test_a_refused_token_or_account_is_retried_and_needs_an_operator(status: int) -> None:
    failure = classify(refused(status))
    assert isinstance(failure, ReplicateUnavailable)
    assert failure.needs_operator


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(status: int) -> None:
    failure = classify(refused(status))
    assert isinstance(failure, ReplicateUnavailable)
    assert not failure.needs_operator


@pytest.mark.parametrize("status", [405, 408, 410, 418, None])
def test_an_unlisted_status_is_retried_rather_than_failing_the_job(status: int | None) -> None:
    failure = classify(refused(status))
    assert isinstance(failure, ReplicateUnavailable)
    assert not isinstance(failure, PermanentRejection)


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused", request=REQUEST),
        httpx.ConnectTimeout("timed out", request=REQUEST),
        httpx.ReadTimeout("timed out", request=REQUEST),
        httpx.RemoteProtocolError("server disconnected", request=REQUEST),
        httpx.PoolTimeout("no connection free", request=REQUEST),
    ],
    ids=type,
)
def test_no_answer_at_all_is_retried(error: httpx.HTTPError) -> None:
    failure = classify(error)
    assert isinstance(failure, ReplicateUnavailable)
    assert type(error).__name__ in str(failure)
    assert not failure.needs_operator


@pytest.mark.parametrize("error", [ValueError("bad model reference"), KeyError("id")])
def test_errors_that_are_not_about_the_call_are_left_to_the_caller(error: Exception) -> None:
    assert classify(error) is None


def test_a_throttled_answer_is_described_once() -> None:
    detail = "Request was throttled. Your rate limit resets in ~30s."
    assert describe(refused(429, "Request was throttled.", detail)) == detail


def test_a_refusal_without_words_is_described_by_its_status() -> None:
    assert describe(ReplicateError(status=413)) == "Replicate answered HTTP 413"
    assert describe(ReplicateError(status=404, detail="Not found.")) == "Not found."


# Ambiguity: may the prediction exist after this error? -----------------------------------------


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (refused(500), True),
        (refused(503), True),
        (refused(None), True),
        (refused(401), False),
        (refused(408), False),
        (httpx.ConnectError("refused", request=REQUEST), False),
        (httpx.ConnectTimeout("timed out", request=REQUEST), False),
        (httpx.PoolTimeout("no connection free", request=REQUEST), False),
        (httpx.ReadTimeout("timed out", request=REQUEST), True),
        (httpx.RemoteProtocolError("server disconnected", request=REQUEST), True),
    ],
    ids=repr,
)
def test_an_error_after_the_request_was_sent_is_ambiguous(
    error: Exception, ambiguous: bool
) -> None:
    failure = classify(error)
    assert isinstance(failure, ReplicateUnavailable)
    assert failure.ambiguous is ambiguous


def _mapped(error: Exception) -> httpx.HTTPError:
    """What `httpx_aiohttp` raises for an aiohttp error: any `ClientConnectionError` becomes
    `httpx.ConnectTimeout`, with the original as its cause."""
    mapped = httpx.ConnectTimeout(str(error), request=REQUEST)
    mapped.__cause__ = error
    return mapped


_KEY = aiohttp.client_reqrep.ConnectionKey("replicate.test", 80, False, True, None, None, None)


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (_mapped(aiohttp.ClientConnectorError(_KEY, OSError(111, "refused"))), False),
        (_mapped(aiohttp.ConnectionTimeoutError("connect timed out")), False),
        (_mapped(aiohttp.ServerDisconnectedError()), True),
        (_mapped(aiohttp.ClientOSError(104, "connection reset")), True),
        (_mapped(aiohttp.SocketTimeoutError("read timed out")), True),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientConnectorError(_KEY, OSError(111, "refused")), False),
    ],
    ids=repr,
)
def test_under_the_aiohttp_transport_only_a_connection_never_made_is_unambiguous(
    error: Exception, ambiguous: bool
) -> None:
    failure = classify(error)
    assert isinstance(failure, ReplicateUnavailable)
    assert failure.ambiguous is ambiguous


# Throttling: how long Replicate asks us to wait --------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": " 3.5 "}, 3.5),
        ({"ratelimit-reset": "9"}, 9.0),
        ({"retry-after": "soon", "ratelimit-reset": "4"}, 4.0),
        ({"retry-after": "Sun, 29 Nov 2026 01:00:30 GMT"}, 30.0),
        ({"retry-after": "-1"}, None),
        ({}, None),
    ],
)
def test_the_wait_is_read_from_the_headers(headers: dict[str, str], seconds: float | None) -> None:
    now = datetime(2026, 11, 29, 1, 0, 0, tzinfo=UTC)
    assert seconds_from_headers(httpx.Headers(headers), now) == seconds


@pytest.mark.parametrize(
    ("detail", "seconds"),
    [
        ("Request was throttled. Your rate limit resets in ~30s.", 30.0),
        ("Request was throttled. Your rate limit resets in ~ 2s.", 2.0),
        ("Request was throttled.", None),
        (None, None),
    ],
)
def test_the_wait_is_read_from_replicates_words(detail: str | None, seconds: float | None) -> None:
    assert seconds_from_detail(detail) == seconds


def test_a_throttle_waits_as_the_headers_say_else_as_the_detail_says_else_a_second() -> None:
    detail = "Request was throttled. Your rate limit resets in ~30s."
    with_headers = Throttled(refused(429, "Request was throttled.", detail), 12.0)
    cases = [
        (with_headers, 12.0),
        (refused(429, "Request was throttled.", detail), 30.0),
        (refused(429, "Request was throttled.", "Slow down."), 1.0),
    ]
    for error, seconds in cases:
        failure = classify(error)
        assert isinstance(failure, ReplicateUnavailable)
        assert failure.retry_after_s == seconds
        assert not failure.ambiguous


def test_cancel_after_names_the_deadline_in_seconds_never_below_replicates_minimum() -> None:
    assert cancel_after(600) == "600s"
    assert cancel_after(1) == "5s"
