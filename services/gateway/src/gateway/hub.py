"""The in-memory hub of one gateway process: it fans the job-store's change announcements,
webhook-ingest's progress and the output log's new chunks out to every open stream's
subscription, never blocking (a subscriber that falls behind is dropped), and ends the streams
when they must reconnect. It also knows which running jobs' text its streams read
(`wanted.py`), for the relay.

No NATS or HTTP here: the NATS adapter feeds the hub, the event streams (`realtime.py`) and the
output streams (`output.py`) read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from jobs_proto.api import JobChanged, JobProgress, JobView
from jobs_proto.output import OutputChunk
from jobs_proto.status import is_terminal

from .resync import Seen, watched_running
from .wanted import WantedOutput


@dataclass(frozen=True, slots=True)
class OutputAppended:
    """A chunk just stored in the output log of `prediction_id` (of job `job_id`)."""

    job_id: uuid.UUID
    prediction_id: str
    chunk: OutputChunk


Update = JobChanged | JobProgress | OutputAppended

# Running jobs remembered, their owner for routing progress to the multiplexed streams (a
# progress message names no user) and the newest version seen for the resync of open streams:
# the most recent jobs, enough for every job running at once.
MAX_KNOWN_OWNERS: Final = 100_000

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
        # The `/output` streams: a job's changes and its log's chunks, never its progress.
        self._by_output: dict[uuid.UUID, set[Subscription]] = {}
        self._owners: OrderedDict[uuid.UUID, Seen] = OrderedDict()
        self._stopping = False
        self.dropped = 0
        # The running jobs whose text a stream here reads (the relay reads only those).
        self.wanted = WantedOutput(self._reads_text)

    @property
    def open_streams(self) -> int:
        return sum(len(s) for index in self._indexes() for s in index.values())

    def _indexes(self) -> tuple[dict[Any, set[Subscription]], ...]:
        return (self._by_job, self._by_user, self._by_output)

    def _reads_text(self, job_id: uuid.UUID) -> bool:
        # Every stream kind shows the job's text as it is written: `/output` its chunks, the
        # event streams its progress (relayed too). The owner is known for running jobs only.
        return (
            job_id in self._by_output
            or job_id in self._by_job
            or self._owner(job_id) in self._by_user
        )

    def _owner(self, job_id: uuid.UUID) -> str | None:
        seen = self._owners.get(job_id)
        return None if seen is None else seen.user_id

    def note_owner(self, job_id: uuid.UUID, user_id: str, version: int = 0) -> None:
        known = self._owners.get(job_id)
        if known is None or version > known.version or user_id != known.user_id:
            # Versions only go forward: an older state read late does not undo a newer one.
            seen = max(version, known.version) if known is not None else version
            self._owners[job_id] = Seen(user_id, seen)
        self._owners.move_to_end(job_id)
        while len(self._owners) > MAX_KNOWN_OWNERS:
            self._owners.popitem(last=False)

    def _subscription(self) -> Subscription:
        subscription = Subscription(self.policy.queue_size)
        if self._stopping:
            subscription.end(self.policy.retry_ms)
        return subscription

    def _all(self) -> Iterator[Subscription]:
        for index in self._indexes():
            for subscribers in index.values():
                yield from subscribers

    def open_job(self, job_id: uuid.UUID) -> Subscription:
        """A subscription to one job's updates, until its `close`."""
        subscription = self._open(self._by_job, job_id)
        self.wanted.look(job_id)
        return subscription

    def open_user(self, user_id: str) -> Subscription:
        """A subscription to the updates of all of a user's jobs, until its `close`."""
        return self._open(self._by_user, user_id)

    def open_output(self, job_id: uuid.UUID) -> Subscription:
        """A subscription to one job's changes and new output chunks, until its `close`."""
        subscription = self._open(self._by_output, job_id)
        self.wanted.look(job_id)
        return subscription

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
        return job_id in self._by_job or user_id in self._by_user or job_id in self._by_output

    def watches_output(self, job_id: uuid.UUID) -> bool:
        """Whether an `/output` stream here waits for this job: when none does, a chunk of its
        log need not even be decoded."""
        return job_id in self._by_output

    def note_change(
        self,
        job_id: uuid.UUID,
        user_id: str,
        terminal: bool,
        prediction_id: str | None = None,
        version: int = 0,
    ) -> None:
        """Remember (or, once terminal, forget) who owns a job, for routing its progress, and
        the newest version seen, for the resync; its prediction once known, for the watched
        set."""
        if terminal:
            self._owners.pop(job_id, None)
        else:
            self.note_owner(job_id, user_id, version)
        self.wanted.learn(job_id, prediction_id, terminal)

    def note_view(self, view: JobView, user_id: str) -> None:
        """A stream read the job's state (its owner's): what the announcements may not have
        told this process (it started later, or nobody watched the job then)."""
        self.note_change(
            view.job_id, user_id, is_terminal(view.status), view.prediction_id, view.version
        )

    def publish_change(self, change: JobChanged) -> None:
        job = change.job
        job_id = job.job_id
        self.note_change(
            job_id, change.user_id, is_terminal(job.status), job.prediction_id, job.version
        )
        self._deliver(self._by_job.get(job_id, set()), change)
        self._deliver(self._by_user.get(change.user_id, set()), change)
        self._deliver(self._by_output.get(job_id, set()), change)

    def seen(self, job_id: uuid.UUID) -> Seen | None:
        """The job's owner and newest version seen while it runs (`None`: ended, or unknown)."""
        return self._owners.get(job_id)

    def watched_running(self) -> dict[uuid.UUID, Seen]:
        """The running jobs an open stream here waits for, with the version last seen of each:
        what the resync asks the job-store about (nothing when no stream is open)."""
        if not (self._by_job or self._by_output or self._by_user):
            return {}
        job_streams = [*self._by_job, *self._by_output]
        return watched_running(self._owners, job_streams, self._by_user.keys())

    def publish_progress(self, progress: JobProgress) -> None:
        self._deliver(self._by_job.get(progress.job_id, set()), progress)
        owner = self._owner(progress.job_id)
        if owner is not None:
            self._deliver(self._by_user.get(owner, set()), progress)

    def publish_output(self, appended: OutputAppended) -> None:
        self._deliver(self._by_output.get(appended.job_id, set()), appended)

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
