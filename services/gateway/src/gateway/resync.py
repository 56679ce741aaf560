"""The periodic resync of open streams, its decisions: which jobs to ask the job-store about
(running jobs some stream here waits for) and which answers mean a change announcement was
lost (a stored version newer than any this process saw). Core NATS is at-most-once: without
this a stream whose job's terminal change was lost would send keepalives forever.

No NATS here: `adapters/resync.py` asks the job-store and hands the hub what was missed.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Seen:
    """A running job as this process last knew it: its owner and the newest version seen."""

    user_id: str
    version: int


@dataclass(frozen=True, slots=True)
class Missed:
    """A job the job-store holds at `stored`, of which this process saw only `seen`."""

    job_id: uuid.UUID
    user_id: str
    seen: int
    stored: int


def watched_running(
    running: Mapping[uuid.UUID, Seen],
    job_streams: Iterable[uuid.UUID],
    user_streams: Collection[str],
) -> dict[uuid.UUID, Seen]:
    """The running jobs some open stream waits for: those with a stream of their own
    (`/events`, `/output`) and those of a user with a multiplexed stream (`/api/events`). A
    job not known as running (ended, or never read here) is left out: a stream of an ended job
    ends by itself. Nothing is looked at when no stream is open."""
    asked: dict[uuid.UUID, Seen] = {}
    for job_id in job_streams:
        seen = running.get(job_id)
        if seen is not None:
            asked[job_id] = seen
    if user_streams:
        for job_id, seen in running.items():
            if seen.user_id in user_streams:
                asked[job_id] = seen
    return asked


def missed(asked: Mapping[uuid.UUID, Seen], stored: Mapping[uuid.UUID, int]) -> list[Missed]:
    """The jobs whose stored version is newer than the one seen here: a change of each was
    not announced to this process. A job the store does not hold (purged) is no change."""
    return [
        Missed(job_id, seen.user_id, seen.version, stored[job_id])
        for job_id, seen in asked.items()
        if stored.get(job_id, 0) > seen.version
    ]


def chunks(job_ids: Sequence[uuid.UUID], size: int) -> Iterator[list[uuid.UUID]]:
    """`job_ids` in lists of at most `size`, for requests of bounded size."""
    for start in range(0, len(job_ids), size):
        yield list(job_ids[start : start + size])
