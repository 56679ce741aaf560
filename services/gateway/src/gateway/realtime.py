"""Pushed updates: one in-memory hub fans the job-store's change announcements and
webhook-ingest's progress out to every open event stream of this process, and each stream
turns what it receives into Server-Sent Events, dropping progress of any prediction other
than the one its job is bound to.

No NATS or HTTP here: the NATS adapter feeds the hub, the HTTP adapter sends the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import msgspec

from jobs_proto.api import JobChanged, JobProgress, JobView
from jobs_proto.status import is_terminal

Update = JobChanged | JobProgress
# Reads a job again (its owner's view), for a change announced without its output.
Reload = Callable[[uuid.UUID], Awaitable[JobView | None]]

_encoder: Final = msgspec.json.Encoder()
# Owners remembered for routing progress to the multiplexed streams (a progress message
# names no user): the most recent jobs, enough for every job running at once.
MAX_KNOWN_OWNERS: Final = 100_000
# A resumed multiplexed stream sends again every job changed since a little before the
# position it names: changes of several jobs may arrive slightly out of time order, and a
# state sent twice is harmless.
RESUME_SLACK: Final = timedelta(seconds=5)


# A hub index's key: a job id or a user id.
K = TypeVar("K", uuid.UUID, str)


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """How event streams behave: `keepalive_s` between comment lines on a quiet stream,
    `queue_size` updates a slow client may fall behind before it is dropped, `retry_ms` the
    reconnection delay suggested when the gateway shuts down."""

    keepalive_s: float = 15.0
    queue_size: int = 256
    retry_ms: int = 1000


class Dropped(Exception):
    """A subscriber fell `queue_size` updates behind: its stream ends (the client
    reconnects with `Last-Event-ID` and gets the current state)."""


class Reconnect(Exception):
    """The stream must end with a `retry:` hint: the gateway stops (the client reconnects to
    another replica), or its NATS connection was lost for a while (changes may have been
    missed: the client reconnects with `Last-Event-ID` and gets the current state)."""

    def __init__(self, retry_ms: int) -> None:
        super().__init__(f"reconnect in {retry_ms} ms")
        self.retry_ms = retry_ms


class Subscription:
    """One stream's inbox: bounded, never blocking the hub. Lean on purpose (one gateway holds
    thousands): no `asyncio.Event`, only a future while the stream waits, and `close` takes it
    out of the hub however the stream ends."""

    __slots__ = ("_index", "_key", "_updates", "_waiter", "dropped", "limit", "reconnect_ms")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # Made at the first update: most streams wait far longer than they hold anything.
        self._updates: deque[Update] | None = None
        self.dropped = False
        # Set when the stream must end with `retry: <ms>` (see `Reconnect`).
        self.reconnect_ms: int | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Where the hub keeps it, for `close`.
        self._index: dict[Any, set[Subscription]] | None = None
        self._key: object = None

    @property
    def updates(self) -> deque[Update] | tuple[()]:
        """What arrived and was not taken yet (oldest first)."""
        return () if self._updates is None else self._updates

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def deliver(self, update: Update) -> None:
        if self.dropped:
            return
        if self._updates is None:
            self._updates = deque()
        if len(self._updates) >= self.limit:
            self.dropped = True
            self._updates.clear()
        else:
            self._updates.append(update)
        self._wake()

    def end(self, retry_ms: int) -> None:
        if self.reconnect_ms is None:
            self.reconnect_ms = retry_ms
        self._wake()

    async def next(self, timeout_s: float) -> Update | None:
        """The next update, or `None` after `timeout_s` of silence."""
        if not self._updates and not self.dropped and self.reconnect_ms is None:
            self._waiter = asyncio.get_running_loop().create_future()
            # `timeout`, not `wait_for`: on Python 3.11 `wait_for` wraps the wait in a task of
            # its own, a second task per open stream for as long as the stream is quiet.
            try:
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            except TimeoutError:
                pass
            finally:
                self._waiter = None
        if self.reconnect_ms is not None:
            raise Reconnect(self.reconnect_ms)
        if self.dropped:
            raise Dropped
        return self._updates.popleft() if self._updates else None

    def close(self) -> None:
        """Leave the hub (the key too when it was the last); harmless twice."""
        index, self._index = self._index, None
        if index is None:
            return
        subscribers = index.get(self._key)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del index[self._key]


class Hub:
    """Routes each update to the subscriptions of its job and of its owner. Synchronous and
    non-blocking: a full subscriber is marked dropped, nobody else waits for it."""

    def __init__(self, policy: StreamPolicy = StreamPolicy()) -> None:
        self.policy = policy
        self._by_job: dict[uuid.UUID, set[Subscription]] = {}
        self._by_user: dict[str, set[Subscription]] = {}
        self._owners: OrderedDict[uuid.UUID, str] = OrderedDict()
        self._stopping = False
        self.dropped = 0

    @property
    def open_streams(self) -> int:
        return sum(len(s) for s in self._by_job.values()) + sum(
            len(s) for s in self._by_user.values()
        )

    def note_owner(self, job_id: uuid.UUID, user_id: str) -> None:
        self._owners[job_id] = user_id
        self._owners.move_to_end(job_id)
        while len(self._owners) > MAX_KNOWN_OWNERS:
            self._owners.popitem(last=False)

    def _subscription(self) -> Subscription:
        subscription = Subscription(self.policy.queue_size)
        if self._stopping:
            subscription.end(self.policy.retry_ms)
        return subscription

    def _all(self) -> Iterator[Subscription]:
        for index in (self._by_job, self._by_user):
            for subscribers in index.values():
                yield from subscribers

    def open_job(self, job_id: uuid.UUID) -> Subscription:
        """A subscription to one job's updates, until its `close`."""
        return self._open(self._by_job, job_id)

    def open_user(self, user_id: str) -> Subscription:
        """A subscription to the updates of all of a user's jobs, until its `close`."""
        return self._open(self._by_user, user_id)

    def _open(self, index: dict[K, set[Subscription]], key: K) -> Subscription:
        subscription = self._subscription()
        index.setdefault(key, set()).add(subscription)
        subscription._index, subscription._key = index, key
        return subscription

    @contextlib.contextmanager
    def watch_job(self, job_id: uuid.UUID) -> Iterator[Subscription]:
        subscription = self.open_job(job_id)
        try:
            yield subscription
        finally:
            subscription.close()

    @contextlib.contextmanager
    def watch_user(self, user_id: str) -> Iterator[Subscription]:
        subscription = self.open_user(user_id)
        try:
            yield subscription
        finally:
            subscription.close()

    def _deliver(self, subscribers: set[Subscription], update: Update) -> None:
        for subscription in subscribers:
            was_dropped = subscription.dropped
            subscription.deliver(update)
            if subscription.dropped and not was_dropped:
                self.dropped += 1

    def watches(self, job_id: uuid.UUID, user_id: str) -> bool:
        """Whether a stream here waits for changes of this job: when none does, its
        announcement need not even be decoded (`note_change` alone keeps the hub's books)."""
        return job_id in self._by_job or user_id in self._by_user

    def note_change(self, job_id: uuid.UUID, user_id: str, terminal: bool) -> None:
        """Remember (or, once terminal, forget) who owns a job, for routing its progress."""
        if terminal:
            self._owners.pop(job_id, None)
        else:
            self.note_owner(job_id, user_id)

    def publish_change(self, change: JobChanged) -> None:
        job_id = change.job.job_id
        self.note_change(job_id, change.user_id, is_terminal(change.job.status))
        self._deliver(self._by_job.get(job_id, set()), change)
        self._deliver(self._by_user.get(change.user_id, set()), change)

    def publish_progress(self, progress: JobProgress) -> None:
        self._deliver(self._by_job.get(progress.job_id, set()), progress)
        owner = self._owners.get(progress.job_id)
        if owner is not None:
            self._deliver(self._by_user.get(owner, set()), progress)

    def stop(self) -> None:
        """End every stream (now and later) with a `retry:` hint: the gateway is going."""
        self._stopping = True
        for subscription in self._all():
            subscription.end(self.policy.retry_ms)

    def resync(self, jitter: Callable[[], float] = random.random) -> int:
        """End every open stream with a `retry:` hint, spread over one to five times
        `retry_ms` so the clients do not all come back at once: updates may have been lost
        (the NATS connection was down), and a reconnecting client gets the current state.
        How many streams were ended."""
        ended = 0
        for subscription in self._all():
            subscription.end(int(self.policy.retry_ms * (1 + 4 * jitter())))
            ended += 1
        return ended


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
            else:
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
            else:
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
