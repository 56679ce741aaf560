"""The `job-store` command's spend as a real process: a reservation over request/reply, the
job's end settled from the stream (usage on `get`, spend in `/metrics`, totals on `usage`),
and the sweep releasing a reservation whose job never came."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobReply, JobUsage
from jobs_proto.events import JobCompleted, JobRequested, JobSubmitted
from jobs_proto.spend import (
    BudgetDecision,
    GetUsage,
    Price,
    ReserveBudget,
    TypeUsage,
    UsageReport,
    month_start,
)
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_testkit.processes import ServiceProcess, command_path, until_serving
from jobs_testkit.servers import free_port
from jobs_testkit.waiting import eventually

OWNER = "user-21"
PRICE = Price(per_input_token_usd=Decimal("0.000001"), per_output_token_usd=Decimal("0.000004"))
AMOUNT = 110_000
_encoder = msgspec.json.Encoder()


def _reserve(job: uuid.UUID, at: datetime) -> ReserveBudget:
    return ReserveBudget(
        job_id=job,
        user_id=OWNER,
        job_type="script_generation",
        amount_micros=AMOUNT,
        at=at,
        user_limit_micros=10 * AMOUNT,
    )


async def _usage(nc: NATS, subjects: Subjects, today: datetime) -> UsageReport:
    day = today.date()
    query = GetUsage(
        user_id=OWNER, first=month_start(day), last=day, today=day, limit_micros=10 * AMOUNT
    )
    reply = await nc.request(subjects.usage, _encoder.encode(query), timeout=5)
    return msgspec.json.decode(reply.data, type=UsageReport)


def _metric(process: ServiceProcess, line_start: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{process.env['ADMIN_PORT']}/metrics").text
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _sums(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "months": "SELECT * FROM budget_months ORDER BY user_id, month",
        "days": "SELECT * FROM budget_days ORDER BY day",
        "usage": "SELECT * FROM usage_days ORDER BY user_id, day, job_type",
        "reservations": "SELECT job_id, user_id, month, day, amount_micros"
        " FROM budget_reservations ORDER BY job_id",
        "jobs": "SELECT id, reserved_micros, predict_time_s, input_tokens, output_tokens,"
        " cost_micros FROM jobs ORDER BY id",
    }
    conn = await asyncpg.connect(dsn)
    try:
        return {name: [tuple(r) for r in await conn.fetch(q)] for name, q in queries.items()}
    finally:
        await conn.close()


def _replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command_path("job-store"), "replay", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_reserved_job_is_settled_from_the_stream_and_counted_and_replayed(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects, other_database_url: str
) -> None:
    job = uuid.uuid4()
    now = datetime.now(UTC)
    reply = await nats_client.request(
        subjects.reserve_budget, _encoder.encode(_reserve(job, now)), timeout=5
    )
    assert msgspec.json.decode(reply.data, type=BudgetDecision).admitted
    report = await _usage(nats_client, subjects, now)
    assert report.budget is not None
    assert report.budget.reserved_micros == AMOUNT

    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(
        JobRequested(
            job_id=job,
            occurred_at=now,
            user_id=OWNER,
            job_type="script_generation",
            input={"topic": "tides"},
            price=PRICE,
            reserved_micros=AMOUNT,
        )
    )
    await publisher.publish(JobSubmitted(job_id=job, occurred_at=now, prediction_id="p-21"))
    await publisher.publish(
        JobCompleted(
            job_id=job,
            occurred_at=now,
            prediction_id="p-21",
            prediction_status="succeeded",
            output="Tides.",
            predict_time_s=1.25,
            input_tokens=1200,
            output_tokens=345,
        )
    )
    cost = 1200 * 1 + 345 * 4  # micro-dollars at PRICE

    async def usage() -> JobUsage | None:
        request = _encoder.encode(GetJob(job_id=job, user_id=OWNER))
        got = await nats_client.request(subjects.get_job, request, timeout=5)
        view = msgspec.json.decode(got.data, type=JobReply).job
        return None if view is None else view.usage

    async def settled() -> bool:
        return await usage() is not None

    await eventually(settled)
    assert await usage() == JobUsage(
        predict_time_s=1.25, input_tokens=1200, output_tokens=345, cost_usd=cost / 1e6
    )
    report = await _usage(nats_client, subjects, now)
    assert report.by_type == {"script_generation": TypeUsage(jobs=1, cost_micros=cost)}
    assert report.budget is not None
    assert (report.budget.spent_micros, report.budget.reserved_micros) == (cost, 0)
    spent = _metric(job_store, 'jobs_spend_usd_total{job_type="script_generation"}')
    assert spent is not None
    assert abs(spent - cost / 1e6) < 1e-9

    # `job-store replay` rebuilds the same sums from the stream, to the micro-dollar, and
    # again after `--truncate` (which empties the sums with the jobs).
    live = await _sums(job_store.env["DATABASE_URL"])
    env = {**job_store.env, "DATABASE_URL": other_database_url}
    for args in ((), ("--truncate",)):
        replayed = await asyncio.to_thread(_replay, env, *args)
        assert replayed.returncode == 0, replayed.stderr
        assert await _sums(other_database_url) == live


async def test_the_sweep_releases_a_reservation_whose_job_never_came(
    tmp_path: Path,
    nats_url: str,
    database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    nats_client: NATS,
) -> None:
    env = {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "JOBS_STREAM": jobs_stream_ready.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
        "RESERVATION_GRACE_S": "0.5",
        "RESERVATION_SWEEP_S": "0.2",
    }
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await until_serving(process, "postgres", within=20.0)
        now = datetime.now(UTC)
        reply = await nats_client.request(
            subjects.reserve_budget, _encoder.encode(_reserve(uuid.uuid4(), now)), timeout=5
        )
        assert msgspec.json.decode(reply.data, type=BudgetDecision).admitted

        async def released() -> bool:
            report = await _usage(nats_client, subjects, now)
            return report.budget is not None and report.budget.reserved_micros == 0

        await eventually(released)
        assert _metric(process, "jobs_budget_reservations_released_total") == 1.0
        assert "reservations of jobs that never came released" in process.log
        assert process.terminate() == 0, process.log
