"""This gateway's own view of running jobs, fed by the job-store's change announcements (which
the gateway receives anyway, for its event streams) and by the job-store's replies, so that a
read of a running job needs no request to the job-store.

Correctness rests on three rules:
- versions only go forward: an announcement or reply not newer than what is known is ignored
  (it only confirms what is known when it is the same version);
- a job never seen, evicted, or not confirmed for `max_age_s` is not answered here: the reader
  asks the job-store (whose reply then feeds the view), so a lost announcement costs at most
  `max_age_s` of staleness, never a wrong owner or a `404`;
- a terminal job is not answered here (the finished-jobs cache keeps its encoded answer); it
  stays as a small marker so a late reply of an older version cannot bring it back.

An announcement is kept as received and decoded only when somebody reads the job: most changes
are of jobs nobody here reads. No NATS or HTTP here.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import msgspec

from jobs_proto.api import (
    GetJob,
    GetJobHistory,
    JobChanged,
    JobHistory,
    JobPage,
    JobReply,
    JobView,
    ListJobs,
)
from jobs_proto.status import JobStatus, is_terminal

from .ports import JobStore

# Running jobs known at once; the least recently changed or read go first.
DEFAULT_MAX_JOBS: Final = 100_000
# How long a known state is trusted without an announcement or a reply confirming it.
DEFAULT_MAX_AGE_S: Final = 30.0


class _JobHead(msgspec.Struct, frozen=True, rename="camel"):
    job_id: uuid.UUID
    version: int
    status: JobStatus


class ChangeHead(msgspec.Struct, frozen=True, rename="camel"):
    """The few fields of a `JobChanged` read for every announcement (msgspec skips the rest)."""

    user_id: str
    job: _JobHead
    output_omitted: bool = False


_heads: Final = msgspec.json.Decoder(ChangeHead)
_changes: Final = msgspec.json.Decoder(JobChanged)
_encoder: Final = msgspec.json.Encoder()


def read_head(raw: bytes) -> ChangeHead:
    """The head of an encoded `JobChanged`; `msgspec.DecodeError` when it is none."""
    return _heads.decode(raw)


def decode_change(raw: bytes) -> JobChanged:
    return _changes.decode(raw)


def etag(view: JobView) -> str:
    """Weak: the same version may be encoded differently (field order, time precision)."""
    return f'W/"{view.job_id}.{view.version}"'


@dataclass(frozen=True, slots=True)
class Answer:
    """A job's `GET` answer, encoded once per version: whose it is, its `ETag`, its body."""

    user_id: str
    etag: str
    body: bytes


@dataclass(slots=True)
class _Known:
    user_id: str
    version: int
    terminal: bool
    confirmed_at: float
    # One of these holds the state (none: output omitted, or terminal): the announcement as
    # received, the view from a reply, or the answer once encoded.
    raw: bytes | None = None
    view: JobView | None = None
    answer: Answer | None = None


class JobViews:
    """The latest known state of each running job, by job id (see the module's rules)."""

    def __init__(
        self,
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_jobs = max_jobs
        self._max_age_s = max_age_s
        self._now = monotonic
        self._jobs: OrderedDict[uuid.UUID, _Known] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def _not_newer(self, job_id: uuid.UUID, version: int) -> bool:
        """Whether an offer of `version` is to be ignored; one equal to the known version
        confirms it (an announcement repeated, or a reply saying nothing changed)."""
        known = self._jobs.get(job_id)
        if known is None or version > known.version:
            return False
        if version == known.version:
            known.confirmed_at = self._now()
        return True

    def _put(self, job_id: uuid.UUID, entry: _Known) -> None:
        self._jobs[job_id] = entry
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self._max_jobs:
            self._jobs.popitem(last=False)

    def offer_change(self, head: ChangeHead, raw: bytes) -> None:
        """An announcement, `raw` as received and `head` read from it."""
        job = head.job
        if self._not_newer(job.job_id, job.version):
            return
        terminal = is_terminal(job.status)
        self._put(
            job.job_id,
            _Known(
                user_id=head.user_id,
                version=job.version,
                terminal=terminal,
                confirmed_at=self._now(),
                raw=None if terminal or head.output_omitted else raw,
            ),
        )

    def offer_view(self, user_id: str, view: JobView) -> None:
        """A job as the job-store answered it for its owner `user_id`, output included."""
        if self._not_newer(view.job_id, view.version):
            return
        terminal = is_terminal(view.status)
        self._put(
            view.job_id,
            _Known(
                user_id=user_id,
                version=view.version,
                terminal=terminal,
                confirmed_at=self._now(),
                view=None if terminal else view,
            ),
        )

    def answer(self, job_id: uuid.UUID) -> Answer | None:
        """The job's encoded answer when it is known, running and recently confirmed."""
        known = self._jobs.get(job_id)
        if known is None or known.terminal:
            return None
        if self._now() - known.confirmed_at >= self._max_age_s:
            return None
        if known.answer is None:
            view = known.view
            if view is None and known.raw is not None:
                view = decode_change(known.raw).job
            if view is None:
                return None  # announced without its output: the job-store has it
            known.answer = Answer(known.user_id, etag(view), _encoder.encode(view))
            known.raw = known.view = None
        return known.answer

    def clear(self) -> None:
        """Forget everything: announcements may have been missed (NATS was away)."""
        self._jobs.clear()


class ViewedJobStore:
    """A `JobStore` whose replies also feed `views`: a job read once is then known here, and a
    reply newer than the announcements received so far moves the view forward."""

    def __init__(self, store: JobStore, views: JobViews) -> None:
        self._store = store
        self._views = views

    async def get_job(self, request: GetJob) -> JobReply:
        reply = await self._store.get_job(request)
        if reply.job is not None and not reply.output_omitted:
            self._views.offer_view(request.user_id, reply.job)
        return reply

    async def list_jobs(self, request: ListJobs) -> JobPage:
        return await self._store.list_jobs(request)

    async def job_history(self, request: GetJobHistory) -> JobHistory:
        return await self._store.job_history(request)
