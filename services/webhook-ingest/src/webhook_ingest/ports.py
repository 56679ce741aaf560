"""What the webhook handler needs from the outside: somewhere to store events, results too large
for an event, and webhooks naming no job (parked), and to send progress.

Adapters over NATS implement these; tests pass fakes. Each raises
`jobs_runtime.errors.Unavailable` when NATS cannot take the message now.
"""

from __future__ import annotations

import uuid
from typing import Protocol

from jobs_proto.api import JobProgress
from jobs_proto.events import JobEvent


class EventStore(Protocol):
    """The `JOBS` stream, as the handler sees it."""

    async def store(self, event: JobEvent) -> bool:
        """Return once the event is stored, `True` when it was already there (same message id).

        Raises `Unavailable` when it cannot be stored now.
        """
        ...


class ProgressSink(Protocol):
    """Where partial output goes for the gateway's push; never stored."""

    async def send(self, progress: JobProgress) -> None:
        """Send it at most once; raises `Unavailable` when it cannot be sent."""
        ...


class OutputSink(Protocol):
    """The output log of running predictions (`jobs_runtime.output.OutputLog`), for the text of
    `output` webhooks: what `/output` streams for models whose own stream is not relayed."""

    async def offer(self, job_id: uuid.UUID, prediction_id: str, text: str) -> None:
        """Offer the prediction's whole text so far (from offset 0): the log appends only what
        it lacks, so writers racing or repeating never duplicate. Raises `Unavailable` when the
        log cannot be written now, `SubjectError` for a prediction id that is not one subject
        token."""
        ...


class ResultStore(Protocol):
    """Where a final output too large for one event is kept, for the job-store to load."""

    async def store(self, prediction_id: str, output: str) -> str:
        """Return the reference to publish as `output_ref` once the output is stored whole.

        Storing the same prediction again replaces its object, so Replicate's retries add
        nothing. Raises `Unavailable` when it cannot be stored now.
        """
        ...


class WebhookParking(Protocol):
    """The dead-letter stream, for signed webhooks that name no job of ours."""

    async def park(self, webhook_id: str, body: bytes, reason: str, detail: str) -> bool:
        """Return once the body is kept with its reason, `True` when it already was (the same
        `webhook-id`). Raises `Unavailable` when it cannot be kept now."""
        ...


class WebhookObserver(Protocol):
    """Where the endpoint reports what became of each webhook (the `/metrics` figures)."""

    def stored(self, duplicate: bool) -> None:
        """A webhook's event is in `JOBS`; `duplicate` when it already was (answered `200`)."""
        ...

    def parked(self) -> None:
        """A signed webhook naming no job of ours was parked (answered `200`)."""
        ...

    def refused(self, reason: str) -> None:
        """A request was refused (`4xx`, or `503` for `too_many_large_bodies`), by reason:
        `rate_limited`, `bad_signature`, `payload_too_large`, `not_a_prediction`, ..."""
        ...

    def not_stored(self, reason: str) -> None:
        """A signed webhook could not be stored now (`503`): `bus_unavailable`,
        `results_unavailable`, `parking_unavailable` or `too_large_for_bus`."""
        ...

    def output_not_offered(self) -> None:
        """An `output` webhook's text could not be offered to the output log (the webhook was
        still answered by its event's storage; the next one, or the relay, covers it)."""
        ...

    def large_bodies(self, in_progress: int) -> None:
        """How many bodies over 1 MiB are being received or held, each time it changes."""
        ...


class NoObserver:
    """A `WebhookObserver` that keeps nothing, for tests and tools."""

    def stored(self, duplicate: bool) -> None:
        pass

    def parked(self) -> None:
        pass

    def refused(self, reason: str) -> None:
        pass

    def not_stored(self, reason: str) -> None:
        pass

    def output_not_offered(self) -> None:
        pass

    def large_bodies(self, in_progress: int) -> None:
        pass
