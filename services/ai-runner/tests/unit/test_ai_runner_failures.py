"""Which of the client's errors fail a job and which are retried (no I/O)."""

import httpx
import pytest
from replicate.exceptions import ReplicateError

from ai_runner.adapters.replicate import classify, describe
from ai_runner.ports import PermanentRejection, TransientFailure

REQUEST = httpx.Request("POST", "http://replicate.test/v1/models/google/gemini-3-pro/predictions")


def refused(status: int | None, title: str = "Title", detail: str = "Detail.") -> ReplicateError:
    return ReplicateError(title=title, detail=detail, status=status)


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_a_refusal_of_the_request_itself_is_permanent(status: int) -> None:
    failure = classify(refused(status, "Input validation failed", "webhook must be an HTTP URL"))
    assert isinstance(failure, PermanentRejection)
    assert failure.message == "Input validation failed: webhook must be an HTTP URL"


@pytest.mark.parametrize("status", [401, 402, 403])
def test_a_refused_token_or_account_is_retried_and_needs_an_operator(status: int) -> None:
    failure = classify(refused(status))
    assert isinstance(failure, TransientFailure)
    assert failure.needs_operator


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(status: int) -> None:
    failure = classify(refused(status))
    assert isinstance(failure, TransientFailure)
    assert not failure.needs_operator


@pytest.mark.parametrize("status", [405, 408, 410, 418, None])
def test_an_unlisted_status_is_retried_rather_than_failing_the_job(status: int | None) -> None:
    failure = classify(refused(status))
    assert isinstance(failure, TransientFailure)
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
    assert isinstance(failure, TransientFailure)
    assert type(error).__name__ in failure.message
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
