"""The `Limits` port over a NATS KV bucket (`<JOBS_STREAM>_LIMITS`) shared by every replica:
a sliding-window log of creation times and the set of jobs whose prediction is in flight, each
one key changed only by compare-and-set, so replicas racing for the last slot cannot both win."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Final, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from ai_runner.ports import Capacity, LimitWait, NoObserver, RunnerObserver
from jobs_proto.stream import DEV_CAPACITY
from jobs_runtime.bus import ensure_key_value

CREATIONS: Final = "creations"
IN_FLIGHT_KEY: Final = "in_flight"
# A creation counts this much longer than the window: the slot is taken a few milliseconds
# before Replicate records the create, and that gap varies from one create to the next.
_GUARD_S: Final = 0.5
# How soon a full in-flight limit is looked at again (slots free when predictions end, which
# no clock predicts).
_IN_FLIGHT_RECHECK_S: Final = 1.0

T = TypeVar("T")


class Hold(msgspec.Struct, frozen=True):
    """One job's in-flight slot: held until `until` (epoch seconds) at the latest."""

    until: float
    job_type: str = ""


_times = msgspec.json.Decoder(list[float])
_holds = msgspec.json.Decoder(dict[str, Hold])
_encode = msgspec.json.Encoder().encode


def bucket_name(jobs_stream: str) -> str:
    return f"{jobs_stream}_LIMITS"


async def limits_bucket(
    js: JetStreamContext,
    jobs_stream: str,
    *,
    replicas: int = 1,
    max_bytes: int = DEV_CAPACITY.limits_bucket_max_bytes,
) -> KeyValue:
    """The limits bucket, created by the first runner that needs it (the same configuration
    from every replica, so a race to create it succeeds for both)."""
    # Direct gets: every limit is written by compare-and-set, so a lagging replica's answer
    # can only make a write conflict (and read again) or a decision wait.
    return await ensure_key_value(
        js, bucket_name(jobs_stream), replicas=replicas, max_bytes=max_bytes, direct=True
    )


# What `capacity` answers when no limit is set: more than any fetch asks for.
_UNLIMITED: Final = 1_000_000


class KvLimits:
    """`creations_per_window` creates in any `window_s` (Replicate: 600 a minute; 0: no limit),
    at most `max_in_flight` predictions running (0: no limit), across every replica.

    The creations key holds the times of the creates in the last window, oldest first; the
    in-flight key maps each job to when its slot expires anyway (its prediction's deadline
    plus a grace), so a slot whose release was lost frees itself.
    """

    def __init__(
        self,
        kv: KeyValue,
        *,
        creations_per_window: int,
        window_s: float,
        max_in_flight: int,
        clock: Callable[[], float] = time.time,
        observer: RunnerObserver | None = None,
    ) -> None:
        self._kv = kv
        self._observer = observer or NoObserver()
        self._per_window = creations_per_window
        self._window_s = window_s + _GUARD_S
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._types_seen: set[str] = set()
        # Each key's value and revision as this replica last read or wrote them.
        self._last: dict[str, tuple[bytes | None, int | None]] = {}
        # This replica's own changes of a key go one at a time: concurrent jobs would otherwise
        # conflict with each other on the same revision, each conflict a wasted write and a read.
        self._locks: dict[str, asyncio.Lock] = {}

    async def _change(
        self, key: str, change: Callable[[bytes | None], tuple[bytes | None, T]]
    ) -> T:
        """Apply `change` to the key's value by compare-and-set, again after every conflict;
        `change` answers the new value (None: leave it) and a result.

        The first try starts from the value this replica last read or wrote, so a replica
        alone on the bucket writes without reading first; a conflict (another replica wrote)
        reads afresh. A decision to leave the value as it is is never taken on a remembered
        value, since nothing would prove it current: that value is read again and decided on.
        """
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            return await self._change_alone(key, change)

    async def _change_alone(
        self, key: str, change: Callable[[bytes | None], tuple[bytes | None, T]]
    ) -> T:
        remembered = self._last.get(key)
        while True:
            if remembered is not None:
                value, revision = remembered
                remembered = None
                fresh = False
            else:
                value, revision = await self._read(key)
                fresh = True
            new, result = change(value)
            if new is None or new == value:
                if fresh:
                    return result
                continue
            try:
                if revision is None:
                    written = await self._kv.create(key, new)
                else:
                    written = await self._kv.update(key, new, last=revision)
            except KeyWrongLastSequenceError:
                self._last.pop(key, None)
                continue
            self._last[key] = (new, written)
            return result

    async def _read(self, key: str) -> tuple[bytes | None, int | None]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            self._last.pop(key, None)
            return None, None
        self._last[key] = (entry.value, entry.revision)
        return entry.value, entry.revision

    def _live_times(self, value: bytes | None, now: float) -> list[float]:
        times = _times.decode(value) if value else []
        return [t for t in times if t > now - self._window_s]

    def _live_holds(self, value: bytes | None, now: float) -> dict[str, Hold]:
        holds = _holds.decode(value) if value else {}
        live = {job: hold for job, hold in holds.items() if hold.until > now}
        self._show(live)
        return live

    def _show(self, holds: dict[str, Hold]) -> None:
        counts: dict[str, int] = {}
        for hold in holds.values():
            counts[hold.job_type] = counts.get(hold.job_type, 0) + 1
        self._types_seen |= counts.keys()
        for job_type in self._types_seen:
            self._observer.in_flight(job_type, counts.get(job_type, 0))

    def _creation_wait(self, times: list[float], now: float) -> LimitWait:
        # The slot frees when the oldest create of the full window leaves it.
        oldest = times[-self._per_window]
        return LimitWait(CREATIONS, max(0.05, oldest + self._window_s - now))

    async def admit(self, job_id: uuid.UUID, hold_s: float, job_type: str = "") -> LimitWait | None:
        job = str(job_id)
        newly_held = False
        if self._max_in_flight:

            def hold(value: bytes | None) -> tuple[bytes | None, LimitWait | None]:
                nonlocal newly_held
                now = self._clock()
                holds = self._live_holds(value, now)
                if job in holds:
                    newly_held = False
                    return None, None
                if len(holds) >= self._max_in_flight:
                    return None, LimitWait(IN_FLIGHT_KEY, _IN_FLIGHT_RECHECK_S)
                holds[job] = Hold(now + hold_s, job_type)
                newly_held = True
                self._show(holds)
                return _encode(holds), None

            wait = await self._change(IN_FLIGHT_KEY, hold)
            if wait is not None:
                return wait

        if not self._per_window:
            return None

        def take(value: bytes | None) -> tuple[bytes | None, LimitWait | None]:
            now = self._clock()
            times = self._live_times(value, now)
            if len(times) >= self._per_window:
                return None, self._creation_wait(times, now)
            times.append(now)
            return _encode(times), None

        wait = await self._change(CREATIONS, take)
        if wait is not None and newly_held:
            # No create now: the in-flight slot goes back until the job comes again.
            await self.release(job_id)
        return wait

    async def release(self, job_id: uuid.UUID) -> None:
        if not self._max_in_flight:
            return
        job = str(job_id)

        def free(value: bytes | None) -> tuple[bytes | None, None]:
            holds = self._live_holds(value, self._clock())
            holds.pop(job, None)
            self._show(holds)
            return _encode(holds), None

        await self._change(IN_FLIGHT_KEY, free)

    async def capacity(self) -> Capacity:
        """How many creates may start now, read without taking anything: what the consumer
        fetches at most, so messages it cannot serve stay in the stream."""
        now = self._clock()
        free, wait = _UNLIMITED, None
        if self._per_window:
            times = self._live_times((await self._read(CREATIONS))[0], now)
            free = self._per_window - len(times)
            wait = None if free > 0 else self._creation_wait(times, now)
        if self._max_in_flight:
            holds = self._live_holds((await self._read(IN_FLIGHT_KEY))[0], now)
            free_slots = self._max_in_flight - len(holds)
            if free_slots <= 0 and wait is None:
                wait = LimitWait(IN_FLIGHT_KEY, _IN_FLIGHT_RECHECK_S)
            free = min(free, free_slots)
        return Capacity(max(0, free), wait if free <= 0 else None)
