"""The `job-store` command as a real process: retention purges finished jobs through the stream,
a retention longer than the stream refuses to start, `job-store replay` rebuilds the same rows,
and `/metrics` shows batches and the consumer's lag. Each process migrates the database it is
given (the service at start, `replay` before it writes)."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from jobs_proto.api import GetJob, JobReply
from jobs_proto.events import (
    AnyJobEvent,
    JobCancelRequested,
    JobCompleted,
    JobError,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSubmitted,
)
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.results import result_store, store_result
from jobs_testkit.processes import ServiceProcess, command_path, until_serving
from jobs_testkit.servers import PostgresServer, free_port
from jobs_testkit.waiting import eventually

OWNER = "user-9"


def _env(
    nats_url: str, database_url: str, stream: StreamSpec, subjects: Subjects
) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "JOBS_STREAM": stream.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
        # Purge what finished more than a minute ago, looking twice a second.
        "JOB_RETENTION_S": "60",
        "RETENTION_INTERVAL_S": "0.3",
        "LAG_SAMPLE_S": "0.2",
    }


def _admin(process: ServiceProcess, path: str) -> str:
    return f"http://127.0.0.1:{process.env['ADMIN_PORT']}{path}"


async def _ready(process: ServiceProcess) -> None:
    await until_serving(process, "postgres")


@pytest.fixture
async def job_store(
    tmp_path: Path,
    nats_url: str,
    database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> AsyncIterator[ServiceProcess]:
    env = _env(nats_url, database_url, jobs_stream_ready, subjects)
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await _ready(process)
        yield process


async def _get(nc: NATS, subjects: Subjects, job_id: uuid.UUID) -> JobReply:
    request = msgspec.json.encode(GetJob(job_id=job_id, user_id=OWNER))
    reply = await nc.request(subjects.get_job, request, timeout=2)
    return msgspec.json.decode(reply.data, type=JobReply)


def _story(job: uuid.UUID, start: datetime, ending: str) -> list[AnyJobEvent]:
    def at(s: float) -> datetime:
        return start + timedelta(seconds=s)

    prediction = f"p-{job}"
    events: list[AnyJobEvent] = [
        JobRequested(
            job_id=job,
            occurred_at=at(0),
            user_id=OWNER,
            job_type="script_generation",
            input={"topic": f"topic {job}"},
        ),
        JobSubmitted(job_id=job, occurred_at=at(1), prediction_id=prediction),
        JobStarted(job_id=job, occurred_at=at(2), prediction_id=prediction, webhook_id=f"s-{job}"),
    ]
    if ending == "succeeded":
        events.append(
            JobCompleted(
                job_id=job,
                occurred_at=at(3),
                prediction_id=prediction,
                prediction_status="succeeded",
                output=f"Script {job}",
                webhook_id=f"c-{job}",
            )
        )
    elif ending == "failed":
        events.append(
            JobFailed(job_id=job, occurred_at=at(3), error=JobError(code="x", message="no"))
        )
    elif ending == "canceled":
        events.append(JobCancelRequested(job_id=job, occurred_at=at(2.5), user_id=OWNER))
        events.append(
            JobCompleted(
                job_id=job,
                occurred_at=at(3),
                prediction_id=prediction,
                prediction_status="canceled",
                webhook_id=f"c-{job}",
            )
        )
    return events


async def test_finished_jobs_past_retention_are_purged_through_the_stream(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    publisher = EventPublisher(js, subjects)
    now = datetime.now(UTC)
    old, recent, running = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for event in (
        *_story(old, now - timedelta(hours=2), "succeeded"),
        *_story(recent, now - timedelta(seconds=10), "failed"),
        *_story(running, now - timedelta(hours=2), "running"),
    ):
        await publisher.publish(event)

    stream = job_store.env["JOBS_STREAM"]

    async def purged(job: uuid.UUID) -> bool:
        # Gone from the job-store is not enough: a job not yet applied reads as gone too
        # (the job-store writes batches of different jobs at once, in no order between them).
        try:
            await js.get_last_msg(stream, f"{subjects.prefix}job.purged.{job}")
        except NotFoundError:
            return False
        return (await _get(nats_client, subjects, job)).job is None

    async def recent_in() -> bool:
        return (await _get(nats_client, subjects, recent)).job is not None

    await eventually(recent_in)
    await eventually(functools.partial(purged, old), within=10.0)
    # The purge is an event in the stream, with its deterministic id.
    purge = await js.get_last_msg(stream, f"{subjects.prefix}job.purged.{old}")
    assert purge.headers is not None
    assert purge.headers["Nats-Msg-Id"] == f"purged:{old}"
    # More passes, counted rather than slept through: a further old job stored once the last
    # one is gone can only be purged by a later pass, so when the second is gone the pass
    # before it has ended, and whatever it published is in the stream and counted below.
    for _ in range(2):
        extra = uuid.uuid4()
        for event in _story(extra, now - timedelta(hours=2), "succeeded"):
            await publisher.publish(event)

        await eventually(functools.partial(purged, extra), within=10.0)
    for kept in (recent, running):
        with pytest.raises(NotFoundError):
            await js.get_last_msg(stream, f"{subjects.prefix}job.purged.{kept}")
    assert (await _get(nats_client, subjects, recent)).job is not None
    running_view = (await _get(nats_client, subjects, running)).job
    assert running_view is not None
    assert running_view.status == "processing"

    async with httpx.AsyncClient() as http:
        metrics = (await http.get(_admin(job_store, "/metrics"))).text
    # The old job and the two added above, nothing else.
    assert "job_store_purges_published_total 3.0" in metrics
    assert 'job_store_events_total{kind="purged",outcome="changed"} 3.0' in metrics
    assert 'job_store_batch_size_count{mode="batch"}' in metrics
    assert "job_store_consumer_lag 0.0" in metrics
    assert "job_store_consumer_ack_pending 0.0" in metrics


async def test_a_retention_longer_than_the_stream_keeps_events_refuses_to_start(
    tmp_path: Path,
    nats_url: str,
    database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    env = {
        **_env(nats_url, database_url, jobs_stream_ready, subjects),
        "JOB_RETENTION_S": str(400 * 86_400),
    }
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        code = await asyncio.to_thread(process.process.wait, 20)
    assert code == 3, process.log
    refusals = [line for line in process.log.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1
    assert "JOB_RETENTION_S" in refusals[0]
    assert "Traceback" not in process.log


async def test_stream_max_age_s_makes_room_for_a_long_retention(
    tmp_path: Path,
    nats_client: NATS,
    nats_url: str,
    database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    env = {
        **_env(nats_url, database_url, jobs_stream_ready, subjects),
        "JOB_RETENTION_S": str(400 * 86_400),
        "STREAM_MAX_AGE_S": str(500 * 86_400),
    }
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await _ready(process)
    info = await nats_client.jetstream().stream_info(jobs_stream_ready.name)
    assert info.config.max_age == 500 * 86_400


_COLUMNS = (
    "id, user_id, type, status, version, input, output, error_code, error_message,"
    " prediction_id, cancel_requested, created_at, updated_at, submitted_at, started_at,"
    " completed_at, deadline_at, attempts, input_truncated"
)
# `recorded_at` is left out: it is when the row was written, which a replay does later.
_HISTORY = "job_id, seq, kind, occurred_at, source, message_id, summary"


async def _tables(dsn: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    conn = await asyncpg.connect(dsn)
    try:
        jobs = await conn.fetch(f"SELECT {_COLUMNS} FROM jobs ORDER BY id")
        history = await conn.fetch(f"SELECT {_HISTORY} FROM job_history ORDER BY job_id, seq")
    finally:
        await conn.close()
    return [dict(r) for r in jobs], [dict(r) for r in history]


def _replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command_path("job-store"), "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_replay_rebuilds_the_same_rows_and_keeps_purged_jobs_gone(
    tmp_path: Path,
    nats_url: str,
    database_url: str,
    other_database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    nats_client: NATS,
) -> None:
    js = nats_client.jetstream()
    publisher = EventPublisher(js, subjects)
    env = _env(nats_url, database_url, jobs_stream_ready, subjects)
    now = datetime.now(UTC)
    jobs = {uuid.uuid4(): e for e in ("succeeded", "failed", "canceled", "running") * 3}
    purged = uuid.uuid4()
    early = uuid.uuid4()
    stored = uuid.uuid4()
    bucket = await result_store(js, jobs_stream_ready.name)
    ref = await store_result(bucket, f"p-{stored}", "A script stored aside. " * 100)
    with ServiceProcess([command_path("job-store")], env, tmp_path / "live.log") as live:
        await _ready(live)
        for job, ending in jobs.items():
            for event in _story(job, now - timedelta(seconds=30), ending):
                await publisher.publish(event)
        for event in _story(purged, now - timedelta(hours=3), "succeeded"):
            await publisher.publish(event)
        # An event ahead of its job's request, as the live consumer may meet one.
        early_story = _story(early, now - timedelta(seconds=20), "succeeded")
        await publisher.publish(early_story[1])
        for event in (early_story[0], *early_story[2:]):
            await publisher.publish(event)
        stored_story = _story(stored, now - timedelta(seconds=20), "running")
        for event in stored_story:
            await publisher.publish(event)
        await publisher.publish(
            JobCompleted(
                job_id=stored,
                occurred_at=now,
                prediction_id=f"p-{stored}",
                prediction_status="succeeded",
                output_ref=ref,
                webhook_id=f"c-{stored}",
            )
        )

        async def settled() -> bool:
            if (await _get(nats_client, subjects, purged)).job is not None:
                return False
            for job in (early, stored):
                view = (await _get(nats_client, subjects, job)).job
                if view is None or view.status != "succeeded":
                    return False
            info = await js.consumer_info(jobs_stream_ready.name, "job-store")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(settled, within=15.0)
        assert await asyncio.to_thread(live.terminate) == 0, live.log

    replayed = await asyncio.to_thread(_replay, {**env, "DATABASE_URL": other_database_url})
    assert replayed.returncode == 0, replayed.stderr
    assert '"msg":"replayed"' in replayed.stderr

    live_jobs, live_history = await _tables(database_url)
    new_jobs, new_history = await _tables(other_database_url)
    assert len(live_jobs) == len(jobs) + 2
    assert purged not in {r["id"] for r in new_jobs}
    for live_row, new_row in zip(live_jobs, new_jobs, strict=True):
        for column, value in live_row.items():
            assert new_row[column] == value, (live_row["id"], column)
    assert new_history == live_history

    # Again into a database that has jobs: refused, unless asked to empty it first.
    again = await asyncio.to_thread(_replay, {**env, "DATABASE_URL": other_database_url})
    assert again.returncode == 1
    assert "empty database" in again.stderr
    truncated = await asyncio.to_thread(
        _replay, {**env, "DATABASE_URL": other_database_url}, "--truncate"
    )
    assert truncated.returncode == 0, truncated.stderr
    assert await _tables(other_database_url) == (new_jobs, new_history)


async def test_postgres_restarting_mid_stream_loses_nothing_and_applies_each_event_once(
    tmp_path: Path,
    nats_url: str,
    restartable_postgres: PostgresServer,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    nats_client: NATS,
) -> None:
    server = restartable_postgres
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    env = {**_env(nats_url, server.dsn(), jobs_stream_ready, subjects), "JOB_RETENTION_S": "3600"}
    now = datetime.now(UTC) - timedelta(seconds=30)
    before = [uuid.uuid4() for _ in range(5)]
    during = [uuid.uuid4() for _ in range(5)]
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await _ready(process)
        for job in before:
            for event in _story(job, now, "succeeded")[:2]:
                await publisher.publish(event)

        async def all_in(jobs: list[uuid.UUID], status: str) -> bool:
            for job in jobs:
                view = (await _get(nats_client, subjects, job)).job
                if view is None or view.status != status:
                    return False
            return True

        await eventually(lambda: all_in(before, "processing"))
        await asyncio.to_thread(server.stop)
        # Published while Postgres is down: handed back until it returns.
        for job in before:
            for event in _story(job, now, "succeeded")[2:]:
                await publisher.publish(event)
        for job in during:
            for event in _story(job, now, "succeeded"):
                await publisher.publish(event)
        # Postgres comes back once the job-store has met it down with events in hand (its
        # batch retried in place), not after a fixed pause.
        await eventually(lambda: "postgres unavailable, retrying the batch" in process.log)
        await asyncio.to_thread(server.start)
        await eventually(lambda: all_in([*before, *during], "succeeded"), within=30.0)
        for job in [*before, *during]:
            view = (await _get(nats_client, subjects, job)).job
            assert view is not None
            assert (view.output, view.prediction_id) == (f"Script {job}", f"p-{job}")
        assert process.process.poll() is None
    conn = await asyncpg.connect(server.dsn())
    try:
        counts = await conn.fetch(
            "SELECT job_id, count(*) AS entries, max(seq) AS last FROM job_history GROUP BY job_id"
        )
    finally:
        await conn.close()
    # Each change once, in stream order: the batch in hand waited for Postgres instead of
    # handing its events back to be redelivered in any order.
    assert sorted((r["entries"], r["last"]) for r in counts) == [(4, 4)] * 10
    assert '"msg":"postgres unavailable, retrying the batch' in process.log
