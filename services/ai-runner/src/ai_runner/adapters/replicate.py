"""The `Predictions` port over the `replicate` package: creates predictions on Replicate (or the
simulator) and turns the client's errors into the port's permanent or transient failures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import httpx
import replicate
from replicate.exceptions import ReplicateError
from replicate.prediction import Predictions as ReplicatePredictionsApi

from ai_runner.ports import PermanentRejection, PredictionFailure, TransientFailure

# Replicate refused this request for what it contains: the same request gets the same answer.
PERMANENT_STATUSES: Final = frozenset({400, 404, 409, 413, 422})
# Our token, or our account, is refused: the jobs are fine, the configuration (or billing) is
# not, so they wait for an operator instead of failing. 402 is Replicate's "out of credit".
OPERATOR_STATUSES: Final = frozenset({401, 402, 403})


def describe(error: ReplicateError) -> str:
    """Replicate's own words for a refusal (RFC 9457 `title` and `detail`), for the job's error."""
    parts = [p for p in (error.title, error.detail) if p]
    if not parts:
        return f"Replicate answered HTTP {error.status}"
    if len(parts) == 2 and parts[1].startswith(parts[0]):
        # A 429's detail repeats its title ("Request was throttled. Your rate limit ...").
        return parts[1]
    return ": ".join(parts)


def classify(error: BaseException) -> PredictionFailure | None:
    """Whether creating again can help, for an error the client raised; None for anything
    that is not about the call to Replicate (a bug, which the caller lets through).

    - 400, 404, 409, 413, 422: Replicate refused this request; permanent.
    - 401, 402, 403: transient, but an operator must act.
    - 429, 5xx, any other status, and no answer at all (connection refused or reset, timeout):
      transient. Failing a job cannot be undone, retrying can always stop later, so a status
      not listed here is retried rather than failing the job.
    """
    if isinstance(error, ReplicateError):
        message = describe(error)
        if error.status in PERMANENT_STATUSES:
            return PermanentRejection(message)
        return TransientFailure(message, needs_operator=error.status in OPERATOR_STATUSES)
    if isinstance(error, httpx.HTTPError):
        # With no answer we cannot know whether the request reached Replicate; the ambiguity
        # of a timeout after sending is the caller's to resolve (see handlers).
        return TransientFailure(f"no answer from Replicate: {type(error).__name__}: {error}")
    return None


class ReplicatePredictions:
    """Creates predictions with the `replicate` package's async API.

    The client has no close of its own, so this adapter owns the HTTP transport it runs on
    and closes it in `aclose`. The client's async HTTP client binds to the event loop that
    first uses it: build and use one instance inside the service's loop.
    """

    def __init__(self, *, api_token: str, base_url: str, timeout_s: float) -> None:
        self._transport = httpx.AsyncHTTPTransport()
        self._client = replicate.Client(
            api_token=api_token,
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            transport=self._transport,
        )

    async def create(
        self,
        model: str,
        model_input: dict[str, Any],
        webhook: str | None,
        events: Sequence[str],
    ) -> str:
        params: ReplicatePredictionsApi.CreatePredictionParams = {}
        if webhook is not None:
            params["webhook"] = webhook
            params["webhook_events_filter"] = list(events)
        try:
            # The client never retries a POST, so one call is one attempt at most.
            prediction = await self._client.models.predictions.async_create(
                model=model, input=model_input, **params
            )
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            raise failure from exc
        return prediction.id

    async def aclose(self) -> None:
        await self._transport.aclose()
