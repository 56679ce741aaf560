"""The `Predictions` port over the `replicate` package: creates and cancels predictions on
Replicate (or the simulator) and turns the client's errors into the port's permanent or
transient failures. Its httpx clients send over aiohttp (`transport`), which costs a fraction
of httpcore's CPU per call."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import aiohttp
import httpx
import replicate
from httpx_aiohttp import AiohttpTransport
from replicate.exceptions import ReplicateError
from replicate.prediction import Predictions as ReplicatePredictionsApi

from ai_runner.ports import NewPrediction, PermanentRejection, ReplicateUnavailable
from jobs_runtime import tracing

# Replicate refused this request for what it contains: the same request gets the same answer.
PERMANENT_STATUSES: Final = frozenset({400, 404, 409, 413, 422})
# Our token, or our account, is refused: the jobs are fine, the configuration (or billing) is
# not, so they wait for an operator instead of failing. 402 is Replicate's "out of credit".
OPERATOR_STATUSES: Final = frozenset({401, 402, 403})
THROTTLED: Final = 429
# Errors raised before a byte of the request left: Replicate cannot have acted on it.
NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The same for aiohttp, under the transport: no connection was made (refused, DNS, connect or
# pool timeout). `httpx_aiohttp` maps every `ClientConnectionError` to `httpx.ConnectTimeout`,
# a server closing the connection after the request was sent included, so its cause decides.
AIOHTTP_NOT_SENT: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# Replicate's minimum for `Cancel-After`.
MIN_DEADLINE_S: Final = 5

_RESETS_IN = re.compile(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)


class Throttled(ReplicateError):
    """A 429 with the wait Replicate asked for, which `ReplicateError` alone would lose (it
    keeps the body, not the headers)."""

    def __init__(self, error: ReplicateError, retry_after_s: float | None) -> None:
        super().__init__(
            type=error.type,
            title=error.title,
            detail=error.detail,
            status=error.status,
            instance=error.instance,
        )
        self.retry_after_s = retry_after_s


def seconds_from_headers(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait a 429 names: `Retry-After` (seconds or an HTTP date), else `ratelimit-reset`
    (seconds); None when neither is usable."""
    for name in ("retry-after", "ratelimit-reset"):
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            if name != "retry-after":
                continue
            try:
                at = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            seconds = (at - (now or datetime.now(UTC))).total_seconds()
        if seconds >= 0:
            return seconds
    return None


def seconds_from_detail(detail: str | None) -> float | None:
    """The wait in Replicate's words: "Your rate limit resets in ~30s."."""
    if not detail:
        return None
    match = _RESETS_IN.search(detail)
    return float(match[1]) if match else None


async def _keep_throttle_headers(response: httpx.Response) -> None:
    # An httpx response hook runs before the client's own status check, so raising here hands
    # the caller the headers the package would drop.
    if response.status_code == THROTTLED:
        await response.aread()
        error = ReplicateError.from_response(response)
        raise Throttled(error, seconds_from_headers(response.headers))


def describe(error: ReplicateError) -> str:
    """Replicate's own words for a refusal (RFC 9457 `title` and `detail`), for the job's error."""
    parts = [p for p in (error.title, error.detail) if p]
    if not parts:
        return f"Replicate answered HTTP {error.status}"
    if len(parts) == 2 and parts[1].startswith(parts[0]):
        # A 429's detail repeats its title ("Request was throttled. Your rate limit ...").
        return parts[1]
    return ": ".join(parts)


def classify(error: BaseException) -> PermanentRejection | ReplicateUnavailable | None:
    """Whether creating again can help, for an error the client raised; None for anything
    that is not about the call to Replicate (a bug, which the caller lets through).

    - 400, 404, 409, 413, 422: Replicate refused this request; permanent.
    - 401, 402, 403: transient, but an operator must act.
    - 429: transient, with the wait Replicate named (headers, else its words; 1 s at least).
    - 5xx, any other status, and no answer at all (connection refused or reset, timeout):
      transient. Failing a job cannot be undone, retrying can always stop later, so a status
      not listed here is retried rather than failing the job.
    A 5xx or an error after the request was sent is `ambiguous`: the prediction may exist.
    """
    if isinstance(error, ReplicateError):
        message = describe(error)
        if error.status in PERMANENT_STATUSES:
            return PermanentRejection(message)
        if error.status == THROTTLED:
            wait = error.retry_after_s if isinstance(error, Throttled) else None
            if wait is None:
                wait = seconds_from_detail(error.detail)
            return ReplicateUnavailable(message, retry_after_s=max(1.0, wait or 1.0))
        return ReplicateUnavailable(
            message,
            needs_operator=error.status in OPERATOR_STATUSES,
            ambiguous=error.status is None or error.status >= 500,
        )
    if isinstance(error, httpx.HTTPError | aiohttp.ClientError):
        return ReplicateUnavailable(
            f"no answer from Replicate: {type(error).__name__}: {error}",
            ambiguous=not was_not_sent(error),
        )
    return None


def was_not_sent(error: BaseException) -> bool:
    """Whether the request surely never reached Replicate; when in doubt, it may have."""
    cause = error.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, AIOHTTP_NOT_SENT)
    if isinstance(error, aiohttp.ClientError):
        return isinstance(error, AIOHTTP_NOT_SENT)
    return isinstance(error, NOT_SENT)


def aiohttp_transport() -> AiohttpTransport:
    """An httpx transport over one aiohttp connection pool, opened on first use (so inside the
    service's event loop); close it with `aclose`."""
    return AiohttpTransport(client=_proxy_aware_session)


def _proxy_aware_session() -> aiohttp.ClientSession:
    # The transport's own session ignores HTTPS_PROXY / NO_PROXY, and a cluster whose egress
    # goes through a proxy reaches Replicate only through it (httpx, the stream reader's client,
    # reads them by default). Pool size and keep-alive as the transport's defaults.
    connector = aiohttp.TCPConnector(
        limit=100, keepalive_timeout=5.0, ssl=httpx.create_ssl_context()
    )
    return aiohttp.ClientSession(connector=connector, trust_env=True)


def cancel_after(deadline_s: int) -> str:
    """The `Cancel-After` value for a deadline, never below Replicate's minimum."""
    return f"{max(MIN_DEADLINE_S, deadline_s)}s"


class ReplicatePredictions:
    """Creates and cancels predictions with the `replicate` package's async API.

    The package takes extra headers only when a client is built, so `Cancel-After` comes from
    one client per deadline (job types share a handful), all over one HTTP transport (one
    aiohttp connection pool). This keeps the package's request building and error parsing, where an
    own httpx call would duplicate them. The clients have no close of their own, so this adapter
    owns the transport and closes it in `aclose`. Their async HTTP clients bind to the event
    loop that first uses them: build and use one instance inside the service's loop.
    """

    def __init__(self, *, api_token: str, base_url: str, timeout_s: float) -> None:
        self._transport = aiohttp_transport()
        self._api_token = api_token
        self._base_url = base_url
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self._clients: dict[str | None, replicate.Client] = {}

    def _client(self, deadline_s: int | None) -> replicate.Client:
        key = None if deadline_s is None else cancel_after(deadline_s)
        client = self._clients.get(key)
        if client is None:
            client = replicate.Client(
                api_token=self._api_token,
                base_url=self._base_url,
                timeout=self._timeout,
                transport=self._transport,
                headers={} if key is None else {"Cancel-After": key},
                event_hooks={"response": [_keep_throttle_headers]},
            )
            self._clients[key] = client
        return client

    async def create(
        self,
        model: str,
        model_input: dict[str, Any],
        webhook: str | None,
        events: Sequence[str],
        deadline_s: int | None = None,
    ) -> NewPrediction:
        params: ReplicatePredictionsApi.CreatePredictionParams = {}
        if webhook is not None:
            params["webhook"] = webhook
            params["webhook_events_filter"] = list(events)
        attributes = {"replicate.model": model, "server.address": self._base_url}
        try:
            with tracing.span("replicate create", kind="client", attributes=attributes):
                # The client never retries a POST, so one call is one attempt at most.
                prediction = await self._client(deadline_s).models.predictions.async_create(
                    model=model, input=model_input, **params
                )
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            raise failure from exc
        stream_url = (prediction.urls or {}).get("stream")
        return NewPrediction(prediction.id, stream_url or None)

    async def cancel(self, prediction_id: str) -> None:
        try:
            await self._client(None).predictions.async_cancel(prediction_id)
        except ValueError:
            # The answer was a 2xx (errors are raised before parsing) that the package could
            # not parse: a prediction that ended `aborted`, which it does not know. Done.
            return
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            raise failure from exc

    async def aclose(self) -> None:
        await self._transport.aclose()
