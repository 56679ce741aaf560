"""What the ai-runner's handlers need from the outside world, as Protocols and the errors they
may raise; adapters implement them, tests fake them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from jobs_proto.events import JobEvent


class PredictionFailure(Exception):
    """A prediction could not be created; the subclass says whether retrying can help."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentRejection(PredictionFailure):
    """Replicate refused this very request (bad input, unknown model, webhook it will not call):
    sending it again gets the same answer, so the job fails with `message`."""


class TransientFailure(PredictionFailure):
    """The request may succeed later: Replicate unreachable, overloaded or throttling us, or our
    token refused (`needs_operator`: nothing changes until someone fixes the configuration)."""

    def __init__(self, message: str, *, needs_operator: bool = False) -> None:
        super().__init__(message)
        self.needs_operator = needs_operator


class Predictions(Protocol):
    """Replicate's predictions, as far as the ai-runner creates them."""

    async def create(
        self,
        model: str,
        model_input: dict[str, Any],
        webhook: str | None,
        events: Sequence[str],
    ) -> str:
        """Create a prediction of `model` and return its id.

        `webhook` None creates it without webhooks (polling mode; `events` is then ignored).
        Raises `PermanentRejection` or `TransientFailure`; anything else is a bug.
        """
        ...


class EventSink(Protocol):
    """Where job events go: JetStream, returning once the event is stored."""

    async def publish(self, event: JobEvent, /) -> object: ...
