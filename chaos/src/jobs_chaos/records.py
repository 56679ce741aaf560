"""Reads what the audit needs once the system is quiet: the job-store's rows and history from
Postgres, the simulator's predictions per job, and the evidence kept for any violation."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg
import httpx
import nats
from nats.js.errors import NotFoundError

from jobs_chaos.audit import (
    RUNNING,
    TERMINAL,
    Accepted,
    Cancel,
    JobRecord,
    StoredJob,
    prediction_of,
)
from jobs_chaos.load import Reading
from jobs_proto.output import decode_chunk
from jobs_proto.subjects import Subjects

_JOBS = """
SELECT id::text AS id, status, prediction_id, error_code, extract(epoch FROM created_at) AS created,
extract(epoch FROM completed_at) AS completed, output
FROM jobs WHERE id = ANY($1::uuid[])
"""
_BY_TOPIC = """
SELECT id::text AS id, input->>'topic' AS topic FROM jobs WHERE input->>'topic' LIKE $1
"""
_HISTORY = """
SELECT job_id::text AS id, extract(epoch FROM recorded_at) AS at
FROM job_history WHERE job_id = ANY($1::uuid[])
"""


async def stored_jobs(database_url: str, ids: list[str]) -> dict[str, StoredJob]:
    return (await _stored(database_url, ids))[0]


async def _stored(
    database_url: str, ids: list[str]
) -> tuple[dict[str, StoredJob], dict[str, str | None]]:
    """The rows, and each job's final output."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        keys = [uuid.UUID(i) for i in ids]
        rows = await conn.fetch(_JOBS, keys)
        changes: dict[str, list[float]] = {}
        for h in await conn.fetch(_HISTORY, keys):
            changes.setdefault(h["id"], []).append(float(h["at"]))
    finally:
        await conn.close()
    stored = {
        r["id"]: StoredJob(
            status=r["status"],
            prediction_id=r["prediction_id"],
            error_code=r["error_code"],
            created_at=float(r["created"]),
            changes=tuple(sorted(changes.get(r["id"], []))),
            ended_at=None if r["completed"] is None else float(r["completed"]),
        )
        for r in rows
    }
    return stored, {r["id"]: r["output"] for r in rows}


async def jobs_by_topic(database_url: str, prefix: str) -> dict[str, str]:
    """Every stored job whose topic starts with `prefix` (one scenario's submissions), by id."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(_BY_TOPIC, prefix.replace("%", r"\%") + "%")
    finally:
        await conn.close()
    return {r["id"]: r["topic"] for r in rows}


def unaccounted(accepted: list[Accepted], stored: dict[str, str]) -> tuple[list[str], list[str]]:
    """Stored jobs the client was never told of: those of a submission that was answered with
    another job (a duplicate: its key not honoured), and those of one never answered."""
    ids = {a.job_id for a in accepted}
    topics = {a.topic for a in accepted}
    extra = [job_id for job_id in stored if job_id not in ids]
    duplicates = [j for j in extra if stored[j] in topics]
    return sorted(duplicates), sorted(j for j in extra if stored[j] not in topics)


async def output_logs(
    nats_url: str, subjects: Subjects, stream: str, predictions: dict[str, str]
) -> dict[str, tuple[tuple[int, str], ...]]:
    """Each job's prediction's output log, chunk by chunk in the stream's order (direct gets
    of the subject's next message: the harness reads as no service does)."""
    # A cluster's URL is its seed list.
    nc = await nats.connect(nats_url.split(","), connect_timeout=5)
    js = nc.jetstream()
    limit = asyncio.Semaphore(16)

    async def one(job_id: str, prediction_id: str) -> tuple[str, tuple[tuple[int, str], ...]]:
        subject = subjects.output(uuid.UUID(job_id), prediction_id)
        chunks: list[tuple[int, str]] = []
        seq = 1
        async with limit:
            while True:
                try:
                    msg = await js.get_msg(stream, seq, subject=subject, next=True, direct=True)
                except NotFoundError:
                    break
                chunk = decode_chunk(msg.data or b"")
                chunks.append((chunk.offset, chunk.text))
                seq = (msg.seq or seq) + 1
        return job_id, tuple(chunks)

    try:
        return dict(await asyncio.gather(*(one(j, p) for j, p in predictions.items())))
    finally:
        await nc.close()


async def simulated(simulator_url: str, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every prediction the simulator made for each job, as `/_sim/predictions` shows it."""
    async with httpx.AsyncClient(base_url=simulator_url, timeout=10) as client:
        limit = asyncio.Semaphore(16)

        async def one(job_id: str) -> tuple[str, list[dict[str, Any]]]:
            async with limit:
                response = await client.get("/_sim/predictions", params={"job": job_id})
                response.raise_for_status()
                results: list[dict[str, Any]] = response.json()["results"]
                return job_id, results

        return dict(await asyncio.gather(*(one(i) for i in ids)))


async def collect(
    database_url: str,
    simulator_url: str,
    accepted: list[Accepted],
    logs: tuple[str, Subjects, str] | None = None,
    readings: Mapping[str, Reading] | None = None,
    cancels: Mapping[str, Cancel] | None = None,
) -> tuple[list[JobRecord], dict[str, list[dict[str, Any]]]]:
    """The records of the accepted jobs; with `logs` (NATS URL, subjects, output stream), each
    succeeded job's output log too."""
    ids = [a.job_id for a in accepted]
    stored, outputs = await _stored(database_url, ids)
    raw = await simulated(simulator_url, ids)
    streamed: dict[str, tuple[tuple[int, str], ...]] = {}
    if logs is not None:
        succeeded = {
            job_id: job.prediction_id
            for job_id, job in stored.items()
            if job.status == "succeeded" and job.prediction_id
        }
        streamed = await output_logs(*logs, succeeded)
    records = [
        JobRecord(
            accepted=a,
            stored=stored.get(a.job_id),
            predictions=tuple(prediction_of(p) for p in raw.get(a.job_id, [])),
            output=outputs.get(a.job_id),
            streamed=streamed.get(a.job_id),
            read=_read(readings, a.job_id),
            cancel=None if cancels is None else cancels.get(a.job_id),
        )
        for a in accepted
    ]
    return records, raw


def _read(
    readings: Mapping[str, Reading] | None, job_id: str
) -> tuple[str, str | None, str | None] | None:
    reading = None if readings is None else readings.get(job_id)
    return None if reading is None else (reading.text, reading.status, reading.error)


async def wait_quiet(
    database_url: str, simulator_url: str, accepted: list[Accepted], timeout_s: float
) -> bool:
    """Until every accepted job is terminal in the job-store and none of their predictions is
    still running in the simulator (or `timeout_s`); whether quiet came."""
    ids = [a.job_id for a in accepted]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stored = await stored_jobs(database_url, ids)
        except (OSError, asyncpg.PostgresError):
            stored = {}
        if len(stored) == len(ids) and all(j.status in TERMINAL for j in stored.values()):
            raw = await simulated(simulator_url, ids)
            if not any(p["status"] in RUNNING for ps in raw.values() for p in ps):
                return True
        await asyncio.sleep(0.3)
    return False


async def evidence(gateway_url: str, token: str, job_id: str) -> dict[str, Any]:
    """The job as its user sees it, for the report of a violation."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{gateway_url}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
        )
    body: dict[str, Any] = {"status_code": response.status_code}
    try:
        body["body"] = response.json()
    except ValueError:
        body["body"] = response.text
    return body


async def history(database_url: str, job_id: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT seq, kind, source, message_id, summary::text AS summary,"
            " recorded_at::text AS recorded_at FROM job_history WHERE job_id = $1 ORDER BY seq",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]
