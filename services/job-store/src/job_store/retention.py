"""Retention: finished jobs past their time are purged through the stream, so that a replay
of the stream purges them too.

No I/O here: the store and the publisher come in as arguments.
"""

from __future__ import annotations

from datetime import UTC, datetime

from job_store.ports import JobStore, JobStoreObserver, NoObserver, PurgePublisher
from jobs_proto.events import JobPurged


async def purge_finished(
    store: JobStore,
    publisher: PurgePublisher,
    *,
    retention_s: float,
    limit: int,
    observer: JobStoreObserver | None = None,
) -> int:
    """One retention pass: a `purged` event for each of at most `limit` jobs finished more than
    `retention_s` ago; the consumer deletes them when it applies those events, so a replay of
    the stream deletes them too. Returns how many were published.

    Safe to run on every replica at once: a purge's `Nats-Msg-Id` is the job's, so the stream
    keeps one, and applying a second changes nothing.
    """
    job_ids = await store.finished_before(retention_s, limit)
    now = datetime.now(UTC)
    for job_id in job_ids:
        await publisher.publish(JobPurged(job_id=job_id, occurred_at=now))
    if job_ids:
        (observer or NoObserver()).purges_published(len(job_ids))
    return len(job_ids)
