"""What the ai-runner's handlers need from the outside world, as Protocols, the errors they may
raise and the claim record they keep per job; adapters implement them, tests fake them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

from jobs_proto.api import JobProgress, StuckJobs
from jobs_proto.events import JobError, JobEvent
from jobs_proto.replicate import ReplicatePrediction
from jobs_runtime.errors import Unavailable


class PermanentRejection(Exception):
    """Replicate refused this very request (bad input, unknown model, webhook it will not call):
    sending it again gets the same answer, so the job fails with this message."""


class ReplicateUnavailable(Unavailable):
    """Replicate did not create (or cancel) a prediction now: `Unavailable`, with what the
    create's retry policy needs: `needs_operator` (our token refused: nothing changes until
    someone fixes the configuration), `ambiguous` (the request may have reached Replicate and
    created the prediction, a 5xx or a timeout after sending, so creating again could make a
    second one) and `retry_after_s` (how long Replicate said to wait, a 429; such a wait is not
    counted as a failed attempt).
    """

    def __init__(
        self,
        message: str,
        *,
        needs_operator: bool = False,
        ambiguous: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.needs_operator = needs_operator
        self.ambiguous = ambiguous
        self.retry_after_s = retry_after_s

    @property
    def throttled(self) -> bool:
        return self.retry_after_s is not None


@dataclass(frozen=True, slots=True)
class NewPrediction:
    """A prediction Replicate just created: its id, and its `urls.stream` when its model
    streams its text (None otherwise)."""

    id: str
    stream_url: str | None = None


class Predictions(Protocol):
    """Replicate's predictions, as far as the ai-runner creates and cancels them."""

    async def create(
        self,
        model: str,
        model_input: dict[str, Any],
        webhook: str | None,
        events: Sequence[str],
        deadline_s: int | None = None,
    ) -> NewPrediction:
        """Create a prediction of `model` and return its id and stream URL.

        `webhook` None creates it without webhooks (polling mode; `events` is then ignored).
        `deadline_s`: Replicate cancels (or aborts) the prediction that long after creation.
        Raises `PermanentRejection` or `ReplicateUnavailable`; anything else is a bug.
        """
        ...

    async def cancel(self, prediction_id: str) -> None:
        """Ask Replicate to cancel a prediction; one already finished stays as it is.

        Raises `PermanentRejection` (e.g. no such prediction) or `Unavailable`.
        """
        ...


class EventSink(Protocol):
    """Where job events go: JetStream, returning once the event is stored."""

    async def publish(self, event: JobEvent, /) -> object: ...


class Claim(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the runners agreed about one job, kept in a compare-and-set store.

    - `prediction_id`: the job's prediction; once set, no runner creates another.
    - `creating_since`: a create was sent at that time and its outcome is not known (in flight,
      or it failed in a way that may still have created the prediction); until the binding
      window has passed since then, no other runner creates.
    - `attempts`: creates that failed transiently (throttling and refused tokens not counted).
    - `canceled`: the owner canceled the job; a later `requested` creates nothing.
    - `failed`: the job failed for good (rejected, attempts exhausted); told again on redelivery.
    - `job_type`: for metrics by job type where only the claim is at hand (a cancel).
    - `stream_url`: the prediction's `urls.stream`, so that announcing it again carries it.
    """

    prediction_id: str | None = None
    creating_since: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    canceled: bool = False
    failed: JobError | None = None
    job_type: str | None = None
    stream_url: str | None = None


@dataclass(frozen=True, slots=True)
class StoredClaim:
    """A claim as read or written, with the revision a later compare-and-set must name."""

    claim: Claim
    revision: int


class Claims(Protocol):
    """Per-job claims with compare-and-set: of runners racing on one job, exactly one wins."""

    async def read(self, job_id: uuid.UUID) -> StoredClaim | None:
        """The job's claim, or None if no runner has claimed it yet."""
        ...

    async def create(self, job_id: uuid.UUID, claim: Claim) -> int | None:
        """Store the first claim of a job: its revision, or None if a claim already exists."""
        ...

    async def update(self, job_id: uuid.UUID, claim: Claim, revision: int) -> int | None:
        """Replace the claim if it is still at `revision`: the new revision, or None if it
        changed meanwhile (the caller reads again and decides again)."""
        ...


class JobHistory(Protocol):
    """What the job's own events already say, for recovering a prediction a runner lost."""

    async def prediction_of(self, job_id: uuid.UUID) -> str | None:
        """The prediction some event already ties to the job (submitted, started or completed,
        e.g. the `start` webhook of a prediction whose create answered with an error), or None.
        """
        ...


class PredictionReader(Protocol):
    """Reads a prediction as Replicate shows it now (any status, `aborted` included)."""

    async def get(self, prediction_id: str) -> ReplicatePrediction:
        """Raises `PermanentRejection` (Replicate does not know it) or `Unavailable`."""
        ...


class ResultStore(Protocol):
    """Where an output too large for one bus message goes (the `<stream>_RESULTS` store)."""

    async def aside(self, prediction_id: str, output: str) -> str | None:
        """Store `output` aside if it is too large to travel in an event, returning its
        reference; None when it fits in the event. Raises `Unavailable`."""
        ...


class StuckJobFinder(Protocol):
    """The job-store's stuck query: jobs `processing` for longer than `older_than_s`."""

    async def stuck(self, older_than_s: float, limit: int) -> StuckJobs:
        """Raises `Unavailable` when the job-store cannot answer now."""
        ...


@dataclass(frozen=True, slots=True)
class LimitWait:
    """A shared limit is full: `limit` is `creations` or `in_flight`; try again in `wait_s`."""

    limit: str
    wait_s: float


@dataclass(frozen=True, slots=True)
class Capacity:
    """Creates that may start now without waiting (0: none, for `wait`)."""

    free: int
    wait: LimitWait | None


class Limits(Protocol):
    """Replicate's account-wide limits, shared by every runner replica: prediction creations
    per window and predictions in flight."""

    async def admit(self, job_id: uuid.UUID, hold_s: float, job_type: str = "") -> LimitWait | None:
        """Take a creation slot and an in-flight slot for the job (held at most `hold_s`, the
        longest the prediction can run; `job_type` for metrics); None when taken, else which
        limit is full and how long to wait. Taking the in-flight slot again for the same job
        is free."""
        ...

    async def release(self, job_id: uuid.UUID) -> None:
        """The job's prediction is no longer running (or never will be): free its slot."""
        ...


class NoLimits:
    """`Limits` that never wait, for tests and tools."""

    async def admit(self, job_id: uuid.UUID, hold_s: float, job_type: str = "") -> LimitWait | None:
        return None

    async def release(self, job_id: uuid.UUID) -> None:
        pass


class RunnerObserver(Protocol):
    """Where the handlers report what they did (the `/metrics` counters), by job type."""

    def created(self, job_type: str) -> None:
        """A prediction was created (Replicate answered with its id)."""
        ...

    def retried(self, job_type: str, reason: str) -> None:
        """A create is to be tried again later: `throttled`, `ambiguous`, `transient`,
        `needs_operator`, or `binding_wait` (a create may be in flight)."""
        ...

    def limit_waited(self, job_type: str, limit: str) -> None:
        """A create waited for a shared limit (`creations` or `in_flight`)."""
        ...

    def adopted(self, job_type: str) -> None:
        """A prediction whose create answer was lost was found in the job's events and kept."""
        ...

    def orphan_canceled(self, job_type: str) -> None:
        """A second prediction for a job was canceled."""
        ...

    def canceled(self, job_type: str, before_creation: bool) -> None:
        """A cancel request was carried out, before any prediction existed or by canceling it."""
        ...

    def attempts_exhausted(self, job_type: str) -> None:
        """A job failed because its creates kept failing."""
        ...

    def deadline_exceeded(self, job_type: str, stage: str) -> None:
        """The job's own deadline passed: `before_creation` (failed without a prediction) or
        `while_running` (its prediction was canceled)."""
        ...

    def reconciled(self, job_type: str, outcome: str) -> None:
        """The reconciler or poller learnt something by asking Replicate: `completed`,
        `started`, `running`, `unknown` (Replicate does not know the prediction), `error`."""
        ...

    def in_flight(self, job_type: str, count: int) -> None:
        """Predictions of the job type in flight across all replicas, as this replica last saw
        the shared count."""
        ...


class NoObserver:
    """A `RunnerObserver` (and `RelayObserver`) that keeps nothing, for tests and tools."""

    def created(self, job_type: str) -> None:
        pass

    def retried(self, job_type: str, reason: str) -> None:
        pass

    def limit_waited(self, job_type: str, limit: str) -> None:
        pass

    def adopted(self, job_type: str) -> None:
        pass

    def orphan_canceled(self, job_type: str) -> None:
        pass

    def canceled(self, job_type: str, before_creation: bool) -> None:
        pass

    def attempts_exhausted(self, job_type: str) -> None:
        pass

    def deadline_exceeded(self, job_type: str, stage: str) -> None:
        pass

    def reconciled(self, job_type: str, outcome: str) -> None:
        pass

    def in_flight(self, job_type: str, count: int) -> None:
        pass

    # The relay's facts (`RelayObserver`).

    def stream_opened(self) -> None:
        pass

    def stream_closed(self, outcome: str) -> None:
        pass

    def appended(self, chars: int) -> None:
        pass

    def reconnected(self, reason: str) -> None:
        pass

    def progress_sent(self, ok: bool) -> None:
        pass

    def fallback_ended(self, outcome: str) -> None:
        pass


# The relay: a prediction's `urls.stream` into the output log -----------------------------------


@dataclass(frozen=True, slots=True)
class StreamText:
    """An `output` event: the text written since the previous event."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamError:
    """An `error` event: the model failed (a `done` follows)."""

    detail: str


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The `done` event: the prediction ended; `reason` "canceled", "error" or None."""

    reason: str | None = None


StreamEvent = StreamText | StreamError | StreamDone


class StreamGone(Exception):
    """The stream will never answer again (404, 410: the prediction's data was removed)."""


class StreamIdle(Unavailable):
    """The stream sent nothing within Replicate's idle time (408): connect again."""


class StreamSource(Protocol):
    """Connections to a prediction's `urls.stream`."""

    def events(self, url: str) -> AsyncGenerator[StreamEvent, None]:
        """One connection's events, replaying the text from its start. Ending without
        `StreamDone` is a cut. Raises `StreamGone`, `StreamIdle` or `Unavailable` (refused,
        reset, another status); close it with `aclose` when leaving early."""
        ...


@dataclass(frozen=True, slots=True)
class LogEnd:
    """Where a prediction's output log ends: `end` characters, the last at sequence `seq`."""

    end: int = 0
    seq: int = 0


class OutputAppender(Protocol):
    """A prediction's output log, appended once per offset however often text is offered."""

    async def end(self, job_id: uuid.UUID, prediction_id: str) -> LogEnd:
        """Raises `Unavailable`."""
        ...

    async def offer(
        self, job_id: uuid.UUID, prediction_id: str, offset: int, text: str, known: LogEnd
    ) -> LogEnd:
        """Append what of `text` (characters from `offset` on) the log lacks; the new end.
        Raises `Unavailable` (or `OutputGap` when `text` starts past the log's end)."""
        ...


class RelayObserver(Protocol):
    """Where the relay reports what it did (the `/metrics` of streams)."""

    def stream_opened(self) -> None: ...

    def stream_closed(self, outcome: str) -> None:
        """`done`, `canceled`, `job_ended`, `gone`, `gave_up`, `job_over`, `no_stream` or
        `stopped`."""
        ...

    def appended(self, chars: int) -> None:
        """One append to the log carried `chars` new characters."""
        ...

    def reconnected(self, reason: str) -> None:
        """A connection ended early (`cut`, `idle`, `error`, `log`) and another is made."""
        ...

    def progress_sent(self, ok: bool) -> None:
        """One progress message was published (`ok`) or could not be."""
        ...

    def fallback_ended(self, outcome: str) -> None:
        """Polling a prediction whose stream failed for good stopped: `ended` (it reached a
        final status), `gone` (Replicate no longer knows it), `gave_up` or `job_over`."""
        ...


class ProgressSink(Protocol):
    """Where the relay sends `JobProgress` (`job_progress.<jobId>`, core NATS): fire and forget,
    no reply waited for."""

    async def send(self, progress: JobProgress) -> None:
        """Raises `Unavailable` when the message could not be handed to NATS."""
        ...
