"""Pushed updates as Server-Sent Events: each stream (one job's, or all of a user's jobs')
turns what its hub subscription receives (`hub.py`) into event text, dropping progress of
any prediction other than the one its job is bound to.

No NATS or HTTP here: the HTTP adapter sends the text.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec

from jobs_proto.api import JobChanged, JobProgress, JobView
from jobs_proto.status import is_terminal

from .hub import Dropped, Reconnect, StreamPolicy, Subscription

# Reads a job again (its owner's view), for a change announced without its output.
Reload = Callable[[uuid.UUID], Awaitable[JobView | None]]

_encoder: Final = msgspec.json.Encoder()
# A resumed multiplexed stream sends again every job changed since a little before the
# position it names: changes of several jobs may arrive slightly out of time order, and a
# state sent twice is harmless.
RESUME_SLACK: Final = timedelta(seconds=5)


# --- Server-Sent Events text ------------------------------------------------------------------


def status_event(view: JobView, event_id: str) -> bytes:
    data = _encoder.encode(view)
    return b"event: status\nid: " + event_id.encode() + b"\ndata: " + data + b"\n\n"


def progress_event(progress: JobProgress) -> bytes:
    # No `id:`: the client's last event id stays the last status it has.
    return b"event: progress\ndata: " + _encoder.encode(progress) + b"\n\n"


KEEPALIVE: Final = b": keepalive\n\n"


def retry_hint(retry_ms: int) -> bytes:
    return f"retry: {retry_ms}\n: reconnect, with Last-Event-ID\n\n".encode()


def from_its_prediction(progress: JobProgress, prediction_id: str | None) -> bool:
    """Whether progress may reach the job's streams: it must come from the prediction the job is
    bound to. While the job is bound to none yet (its binding may be announced after the first
    output), any prediction's goes: its job was read from the signed webhook URL, which only
    the ai-runner writes, as the job-store's first-to-report binding rule also relies on."""
    return prediction_id is None or progress.prediction_id == prediction_id


# --- one job -----------------------------------------------------------------------------


def parse_version(last_event_id: str | None) -> int:
    """The version a client already has from its `Last-Event-ID` (0: none or not ours)."""
    if not last_event_id:
        return 0
    try:
        return max(0, int(last_event_id.strip()))
    except ValueError:
        return 0


def known_version(last_event_id: str | None, view: JobView) -> int:
    """The version of `view`'s job the client has, from its `Last-Event-ID`: one newer than
    the job's own is not from this job's stream (say, kept across a restore), so it counts
    as none and the client gets the current state."""
    known = parse_version(last_event_id)
    return known if known <= view.version else 0


def already_final(view: JobView, known_version: int) -> bool:
    """The job is terminal and the client has that state: nothing will ever follow (`204`)."""
    return is_terminal(view.status) and known_version >= view.version


async def _complete(view: JobView, omitted: bool, reload: Reload) -> JobView:
    """A changed job with its output, read again when the announcement left it out."""
    if not omitted:
        return view
    with contextlib.suppress(Exception):
        again = await reload(view.job_id)
        if again is not None and again.version >= view.version:
            return again
    return view


async def job_events(
    current: JobView,
    known_version: int,
    subscription: Subscription,
    reload: Reload,
    policy: StreamPolicy,
) -> AsyncIterator[bytes]:
    """The stream of one job: its current state (unless the client has it), then each newer
    state and the progress in between, ending after the terminal state.

    `subscription` was opened before `current` was read, so nothing falls between them;
    whatever it holds that is not newer than what was sent is dropped.
    """
    sent = known_version
    seq = -1
    prediction = current.prediction_id
    if current.version > sent:
        yield status_event(current, str(current.version))
        sent = current.version
    if is_terminal(current.status):
        return
    try:
        while True:
            update = await subscription.next(policy.keepalive_s)
            if update is None:
                yield KEEPALIVE
            elif isinstance(update, JobProgress):
                if update.seq > seq and from_its_prediction(update, prediction):
                    seq = update.seq
                    yield progress_event(update)
            elif isinstance(update, JobChanged):
                # Learnt from any announcement, even one not newer than what was sent: a job's
                # prediction, once recorded, never changes.
                prediction = update.job.prediction_id or prediction
                if update.job.version <= sent:
                    continue
                view = await _complete(update.job, update.output_omitted, reload)
                sent = view.version
                yield status_event(view, str(view.version))
                if is_terminal(view.status):
                    return
    except Reconnect as reconnect:
        yield retry_hint(reconnect.retry_ms)
    except Dropped:
        return


# --- all of a user's jobs ------------------------------------------------------------------


def position(view: JobView) -> str:
    """The opaque `id:` of the multiplexed stream: the job's change time in microseconds.
    A resumed stream sends again every job changed since then (see `RESUME_SLACK`)."""
    return str(int(view.updated_at.timestamp() * 1_000_000))


def parse_position(last_event_id: str | None) -> datetime | None:
    if not last_event_id:
        return None
    try:
        micros = int(last_event_id.strip())
    except ValueError:
        return None
    try:
        return datetime.fromtimestamp(micros / 1_000_000, UTC) - RESUME_SLACK
    except (OverflowError, OSError, ValueError):
        return None


async def user_events(
    initial: list[JobView],
    subscription: Subscription,
    reload: Reload,
    policy: StreamPolicy,
) -> AsyncIterator[bytes]:
    """The multiplexed stream: `initial` states first, then every change and progress of
    the user's jobs, until the client goes or the gateway stops. A job's state not newer
    than one already sent on this stream is skipped."""
    versions: dict[uuid.UUID, int] = {}
    finished: set[uuid.UUID] = set()
    seqs: dict[uuid.UUID, int] = {}
    # Each job's prediction once known: progress of any other is dropped.
    predictions: dict[uuid.UUID, str] = {}
    for view in initial:
        versions[view.job_id] = view.version
        if view.prediction_id is not None:
            predictions[view.job_id] = view.prediction_id
        if is_terminal(view.status):
            finished.add(view.job_id)
        yield status_event(view, position(view))
    try:
        while True:
            update = await subscription.next(policy.keepalive_s)
            if update is None:
                yield KEEPALIVE
            elif isinstance(update, JobProgress):
                job_id = update.job_id
                if (
                    job_id not in finished
                    and update.seq > seqs.get(job_id, -1)
                    and from_its_prediction(update, predictions.get(job_id))
                ):
                    seqs[job_id] = update.seq
                    yield progress_event(update)
            elif isinstance(update, JobChanged):
                if update.job.prediction_id is not None:
                    predictions[update.job.job_id] = update.job.prediction_id
                if update.job.version <= versions.get(update.job.job_id, 0):
                    continue
                view = await _complete(update.job, update.output_omitted, reload)
                versions[view.job_id] = view.version
                if is_terminal(view.status):
                    finished.add(view.job_id)
                    seqs.pop(view.job_id, None)
                    predictions.pop(view.job_id, None)
                yield status_event(view, position(view))
    except Reconnect as reconnect:
        yield retry_hint(reconnect.retry_ms)
    except Dropped:
        return
