"""SIGTERM mid-batch: the service finishes what it holds, acks it, drains and exits 0."""

import asyncio
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.client import Client as NATS

from jobs_proto.events import JobRequested
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_testkit.processes import ServiceProcess
from jobs_testkit.servers import free_port
from jobs_testkit.waiting import eventually

APP = Path(__file__).with_name("consumer_app.py")
JOBS = 40


def app(
    tmp_path: Path,
    name: str,
    nats_url: str,
    stream: StreamSpec,
    subjects: Subjects,
    out: Path,
    **settings: str,
) -> ServiceProcess:
    env = {
        "NATS_URL": nats_url,
        "JOBS_STREAM": stream.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
        "OUT_FILE": str(out),
        "HANDLE_S": "1.0",
        "BATCH": "10",
        **settings,
    }
    return ServiceProcess([sys.executable, str(APP)], env, tmp_path / f"{name}.log")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def publish_jobs(nats_client: NATS, subjects: Subjects) -> list[uuid.UUID]:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    jobs = [uuid.uuid4() for _ in range(JOBS)]
    for job_id in jobs:
        await publisher.publish(
            JobRequested(
                job_id=job_id,
                occurred_at=datetime.now(UTC),
                user_id="u",
                job_type="script_generation",
                input={"topic": "t"},
            )
        )
    return jobs


async def test_sigterm_mid_batch_loses_nothing(
    tmp_path: Path,
    nats_url: str,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    jobs = [uuid.uuid4() for _ in range(JOBS)]
    for job_id in jobs:
        await publisher.publish(
            JobRequested(
                job_id=job_id,
                occurred_at=datetime.now(UTC),
                user_id="u",
                job_type="script_generation",
                input={"topic": "t"},
            )
        )

    first_out = tmp_path / "first.txt"
    with app(tmp_path, "first", nats_url, jobs_stream_ready, subjects, first_out) as first:
        await eventually(lambda: any(line.startswith("start") for line in lines(first_out)))
        code = await asyncio.to_thread(first.terminate)
    assert code == 0, first.log
    first_lines = lines(first_out)
    started = {line.split()[1] for line in first_lines if line.startswith("start")}
    done = {line.split()[1] for line in first_lines if line.startswith("done")}
    assert started == done, "a message in hand was abandoned"
    assert 0 < len(done) < JOBS, "SIGTERM did not land mid-run"

    info = await nats_client.jetstream().consumer_info(jobs_stream_ready.name, "worker")
    assert info.num_ack_pending == 0, "handled messages were not acked before exit"
    assert info.num_pending == JOBS - len(done)

    second_out = tmp_path / "second.txt"
    with app(tmp_path, "second", nats_url, jobs_stream_ready, subjects, second_out) as second:
        await eventually(
            lambda: sum(line.startswith("done") for line in lines(second_out)) >= JOBS - len(done),
            within=20.0,
        )
        assert await asyncio.to_thread(second.terminate) == 0, second.log

    handled = Counter(
        line.split()[1] for line in first_lines + lines(second_out) if line.startswith("done")
    )
    assert set(handled) == {str(j) for j in jobs}
    assert max(handled.values()) == 1, "a message acked by the first process came back"


async def test_work_past_the_grace_period_is_handed_back_at_once(
    tmp_path: Path,
    nats_url: str,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    await publish_jobs(nats_client, subjects)
    out = tmp_path / "stuck.txt"
    stuck = app(
        tmp_path,
        "stuck",
        nats_url,
        jobs_stream_ready,
        subjects,
        out,
        HANDLE_S="600",
        SHUTDOWN_GRACE_S="0.5",
    )
    with stuck:
        await eventually(lambda: any(line.startswith("start") for line in lines(out)))
        code = await asyncio.to_thread(stuck.terminate, 10.0)
    assert code == 0, stuck.log
    assert not any(line.startswith("done") for line in lines(out))
    assert "cancelling it" in stuck.log

    # Nak'ed on the way out: a successor gets every job now, not after the 30 s ack_wait.
    after = tmp_path / "after.txt"
    successor = app(tmp_path, "after", nats_url, jobs_stream_ready, subjects, after, HANDLE_S="0")
    with successor:
        await eventually(
            lambda: sum(line.startswith("done") for line in lines(after)) == JOBS, within=15.0
        )
        assert await asyncio.to_thread(successor.terminate) == 0, successor.log
