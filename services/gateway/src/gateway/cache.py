"""Encoded answers of finished jobs, kept in memory: a terminal job never changes again, so
thousands of clients polling it are answered without asking the job-store each time."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedJob:
    """A finished job's `GET` answer: whose it is (checked on every read), its `ETag` and
    its encoded body."""

    user_id: str
    etag: str
    body: bytes


class FinishedJobs:
    """Least recently used first out, bounded by the bytes of the bodies kept; a body larger
    than an eighth of the bound is not kept (one huge output must not evict every other).

    An answer is kept `ttl_s` at most: the job-store purges finished jobs after its retention
    period, and a hot entry must not outlive that by much.
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        ttl_s: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._now = monotonic
        self._bytes = 0
        self._jobs: OrderedDict[uuid.UUID, tuple[CachedJob, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def get(self, job_id: uuid.UUID) -> CachedJob | None:
        kept = self._jobs.get(job_id)
        if kept is None:
            return None
        cached, expires = kept
        if self._now() >= expires:
            self._drop(job_id)
            return None
        self._jobs.move_to_end(job_id)
        return cached

    def put(self, job_id: uuid.UUID, cached: CachedJob) -> None:
        size = len(cached.body)
        if size * 8 > self._max_bytes or job_id in self._jobs:
            return
        self._jobs[job_id] = (cached, self._now() + self._ttl_s)
        self._bytes += size
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._jobs)))

    def _drop(self, job_id: uuid.UUID) -> None:
        cached, _ = self._jobs.pop(job_id)
        self._bytes -= len(cached.body)
