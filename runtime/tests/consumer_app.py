"""A minimal service over the runtime, run as a process by the shutdown test.

Each handled event is written as `start <jobId>` and, after a pause, `done <jobId>`.
"""

import asyncio
from pathlib import Path

from jobs_proto.events import JobRequested
from jobs_proto.stream import ConsumerSpec
from jobs_runtime.commands import main as command_main
from jobs_runtime.consumer import ConsumerLoop
from jobs_runtime.service import Service, run_service
from jobs_runtime.settings import ServiceSettings


class Settings(ServiceSettings, frozen=True):
    out_file: str = "handled.txt"
    handle_s: float = 1.0
    batch: int = 10


def record(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")


async def main(service: Service[Settings]) -> None:
    settings = service.settings
    out = Path(settings.out_file)

    async def handle(event: JobRequested) -> None:
        record(out, f"start {event.job_id}")
        await asyncio.sleep(settings.handle_s)
        record(out, f"done {event.job_id}")

    spec = ConsumerSpec(
        durable="worker", filter_subjects=(settings.subjects.all_events,), ack_wait_s=30.0
    )
    loop = ConsumerLoop(
        service.js,
        stream=settings.jobs_stream,
        spec=spec,
        subjects=settings.subjects,
        handlers={"requested": handle},
        batch=settings.batch,
        fetch_timeout_s=0.5,
        on_ready=service.ready,
    )
    await loop.run(service.stop)


if __name__ == "__main__":
    command_main("consumer-app", lambda: run_service("consumer-app", Settings, main))
