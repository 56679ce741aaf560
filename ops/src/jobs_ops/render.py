"""The reports as text for a person at a terminal: one line per fact, problems named first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from jobs_ops.reports import (
    HealthReport,
    JobReport,
    ParkedReport,
    ReplayReport,
    StreamHealth,
    StuckReport,
)


def _time(value: datetime | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _size(n: int) -> str:
    if n < 0:
        return "unlimited"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _compact(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def job_text(report: JobReport) -> str:
    lines = []
    job = report.job
    if job is None:
        lines.append(f"job {report.job_id}: not in the job-store")
    else:
        lines += [
            f"job {report.job_id}  {job.get('status')}  (from {report.source})",
            f"  type {job.get('type')}  user {job.get('userId')}  version {job.get('version')}"
            f"  prediction {job.get('predictionId') or '-'}",
            f"  created {job.get('createdAt')}  updated {job.get('updatedAt')}"
            f"  completed {job.get('completedAt') or '-'}",
        ]
        if job.get("error"):
            lines.append(f"  error {job['error'].get('code')}: {job['error'].get('message')}")
    if report.history is not None:
        lines.append(f"history ({len(report.history)})")
        for entry in report.history:
            lines.append(
                f"  {entry.seq:>3}  {_time(entry.occurred_at)}  {entry.kind:<16} "
                f"{entry.source:<14} {_compact(entry.summary)}"
            )
    lines.append(f"predictions ({len(report.predictions)})")
    for p in report.predictions:
        if p.status is None:
            lines.append(f"  {p.prediction_id}  ({p.problem})")
            continue
        metrics = f"  metrics {_compact(p.metrics)}" if p.metrics else ""
        error = f"  error {p.error}" if p.error else ""
        removed = "  data removed" if p.data_removed else ""
        lines.append(
            f"  {p.prediction_id}  {p.status}  created {_time(p.created_at)}"
            f"  completed {_time(p.completed_at)}{error}{removed}{metrics}"
        )
    lines.append(f"events in the stream ({len(report.events)})")
    for e in report.events:
        lines.append(f"  seq {e.seq:<6} {_time(e.time)}  {e.kind:<16} msg-id {e.msg_id or '-'}")
        lines.append(f"      {e.body}")
    if report.notes:
        lines.append("notes")
        lines += [f"  - {note}" for note in report.notes]
    return "\n".join(lines)


def stuck_text(report: StuckReport) -> str:
    head = (
        f"{len(report.items)} stuck job(s): not terminal, older than {report.older_than_s:g}s"
        " or past their deadline"
    )
    lines = [head + (" (more than listed)" if report.truncated else "")]
    for item in report.items:
        job = item.job
        deadline = "  PAST DEADLINE" if item.past_deadline else ""
        lines += [
            f"  {job.job_id}  {job.status}  {job.type}  user {job.user_id}"
            f"  waiting {item.age_s:.0f}s since {_time(job.processing_since)}{deadline}",
            f"      {item.reason}: {item.why}",
        ]
    return "\n".join(lines)


def parked_text(report: ParkedReport) -> str:
    lines = [f"{report.stream}: {len(report.items)} parked message(s)"]
    for p in report.items:
        replay = "replayable" if p.replayable else "not replayable"
        lines += [
            f"  seq {p.seq:<6} {_time(p.time)}  {p.reason or '-'}  from {p.original_subject or '-'}"
            f"  ({replay})",
            f"      why: {p.detail or '-'}",
            f"      body: {p.body}",
        ]
    return "\n".join(lines)


def replay_text(report: ReplayReport) -> str:
    if not report.items:
        return f"{report.stream}: nothing to replay"
    lines = [f"{report.stream}: {len(report.items)} message(s)"]
    for r in report.items:
        lines.append(f"  seq {r.seq:<6} {r.outcome:<9} {r.subject or '-'}  {r.detail}")
    return "\n".join(lines)


def _stream_lines(s: StreamHealth) -> list[str]:
    state = "OK" if not s.problems else "PROBLEM: " + "; ".join(s.problems)
    peers = "".join(
        f"  replica {p.name} {'current' if p.current else 'behind'} lag {p.lag}" for p in s.peers
    )
    lines = [
        f"{s.name}  R{s.replicas}  leader {s.leader or '-'}{peers}",
        f"  messages {s.messages}  bytes {_size(s.bytes)} of {_size(s.max_bytes)}  {state}",
    ]
    for c in s.consumers:
        kind = "durable" if c.durable else "ephemeral"
        problems = "OK" if not c.problems else "PROBLEM: " + "; ".join(c.problems)
        lines.append(
            f"  consumer {c.name} ({kind})  pending {c.pending}  ack pending {c.ack_pending}"
            f"/{c.max_ack_pending}  redelivered {c.redelivered}  last active"
            f" {_time(c.last_active)}  {problems}"
        )
    return lines


def health_text(report: HealthReport) -> str:
    lines: list[str] = []
    for stream in report.streams:
        lines += _stream_lines(stream)
    for name in report.missing:
        lines.append(f"{name}  MISSING: the services create it at start-up")
    lines.append("healthy" if report.healthy else "UNHEALTHY")
    return "\n".join(lines)
