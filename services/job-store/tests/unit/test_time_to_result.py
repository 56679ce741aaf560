"""The time to result the job-store reports: once per job, when it reaches its terminal status,
from its admission by the events' own clocks."""

from __future__ import annotations

import uuid

from job_store.applier import EventApplier
from job_store.ports import NoObserver
from jobs_testkit.events import cancel, completed, failed, requested, started, submitted

from ..fakes import MemoryStore, RecordingAnnouncer


class EndingsObserver(NoObserver):
    def __init__(self) -> None:
        self.endings: list[tuple[str, str, float]] = []

    def job_ended(self, job_type: str, status: str, seconds: float) -> None:
        self.endings.append((job_type, status, seconds))


async def test_each_job_ends_once_with_the_time_since_its_admission() -> None:
    observer = EndingsObserver()
    applier = EventApplier(MemoryStore(), RecordingAnnouncer(), observer=observer)
    done, broken, dropped, running = (uuid.uuid4() for _ in range(4))
    for job in (done, broken, dropped, running):
        await applier(requested(job))
    for event in (
        submitted(done),
        started(done),
        completed(done, s=7.5),
        # A duplicate end changes nothing, so it is not a second ending.
        completed(done, s=7.5),
        failed(broken, s=3),
        cancel(dropped, s=2.5),
        submitted(running),
        started(running),
    ):
        await applier(event)
    assert sorted(observer.endings) == [
        ("script_generation", "canceled", 2.5),
        ("script_generation", "failed", 3.0),
        ("script_generation", "succeeded", 7.5),
    ]
