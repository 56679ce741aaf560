"""The audit of one scenario: every accepted job, as the job-store recorded it, against every
prediction the simulator made for it. Pure functions over plain records, so that a fabricated
bad record proves each check can fail."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
# Predictions that ran to the end: each one is a model run paid for.
COMPLETED = frozenset({"succeeded", "failed"})
RUNNING = frozenset({"starting", "processing"})


@dataclass(frozen=True)
class Accepted:
    """A job the gateway answered `202` for, as the load generator saw it."""

    job_id: str
    gateway: str
    at: float


@dataclass(frozen=True)
class StoredJob:
    """The job-store's row, and the wall-clock times of every change it applied."""

    status: str
    prediction_id: str | None
    error_code: str | None
    created_at: float
    changes: tuple[float, ...]


@dataclass(frozen=True)
class Prediction:
    """One prediction the simulator created for a job, as it shows it now."""

    id: str
    status: str


@dataclass(frozen=True)
class JobRecord:
    accepted: Accepted
    stored: StoredJob | None
    predictions: tuple[Prediction, ...]
    # The job's final output, and its prediction's output log as stored: (offset, text) per
    # chunk in the log's order; None where it was not read.
    output: str | None = None
    streamed: tuple[tuple[int, str], ...] | None = None
    # What a client reading `/output` from offset 0 got: the text, and the `done` status or
    # why it gave up; None where no client read.
    read: tuple[str, str | None, str | None] | None = None


@dataclass
class Violation:
    job_id: str
    kind: str
    detail: str


@dataclass
class Row:
    """One line of the table, and the evidence behind each non-zero count."""

    scenario: str
    jobs: int
    refused: int
    lost: int = 0
    beyond_one: int = 0
    left_running: int = 0
    stuck: int = 0
    wrong_status: int = 0
    # Succeeded jobs whose output log has a gap, a repeat, or text the output does not have;
    # and those whose log holds the whole output (the rest got their end from the output).
    broken_stream: int = 0
    whole_stream: int = 0
    longest_to_terminal_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    jobs_by_gateway: dict[str, int] = field(default_factory=dict)
    # Work each replica did during the scenario, from its own metrics: `{service: {replica: n}}`.
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    stuck_after_s: float = 0.0
    violations: list[Violation] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.beyond_one or self.left_running or self.stuck) and (
            not (self.wrong_status or self.broken_stream)
        )

    @property
    def idle_replicas(self) -> list[str]:
        """Replicas that did nothing in this scenario (the load did not reach them)."""
        return sorted(r for by in self.shares.values() for r, n in by.items() if n <= 0)


def expected_status(predictions: tuple[Prediction, ...], stored: StoredJob) -> str:
    """What the contract's table makes of what the simulator did (no job here is canceled by
    its user): the one completed prediction's status; none completed, `failed` (every create
    failed, or the prediction was aborted or canceled by its deadline)."""
    completed = [p for p in predictions if p.status in COMPLETED]
    if not completed:
        return "failed"
    if len(completed) > 1:
        # Already counted as beyond one; judge the status by the prediction the job names.
        for p in completed:
            if p.id == stored.prediction_id:
                return p.status
    return completed[0].status


def first_difference(one: str, other: str) -> int:
    """The first character at which two texts differ (where the shorter ends, if one is the
    other's start)."""
    return next(
        (i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b),
        min(len(one), len(other)),
    )


def stream_fault(chunks: tuple[tuple[int, str], ...], output: str) -> str | None:
    """What is wrong with an output log against the job's output: a chunk that does not start
    where the previous one ended (a gap, or characters written twice), or text that is not the
    output's; None when the log is a prefix of the output (whole or not)."""
    end = 0
    for offset, text in chunks:
        if offset != end:
            kind = "gap" if offset > end else "repeat"
            return f"{kind}: a chunk at {offset} after {end} characters"
        end += len(text)
    joined = "".join(text for _, text in chunks)
    if not output.startswith(joined):
        return f"the log differs from the output at character {first_difference(joined, output)}"
    return None


def read_fault(read: tuple[str, str | None, str | None], status: str, output: str) -> str | None:
    """What is wrong with what a client read from `/output`: it never got `done`, its `done`
    named another status than the job's, or a succeeded job's text differs from the output."""
    text, done, error = read
    if error is not None or done is None:
        return f"the reader got no done: {error or 'cut off'}"
    if done != status:
        return f"done said {done}, the job is {status}"
    if status == "succeeded" and text != output:
        at = first_difference(text, output)
        return f"the text read differs from the output at character {at}"
    return None


def audit(
    scenario: str,
    records: list[JobRecord],
    *,
    refused: int,
    now: float,
    stuck_after_s: float,
) -> Row:
    """Count, per kind, the jobs that break a promise: lost (accepted but absent or not
    terminal), more than one completed prediction, a prediction still running after quiet,
    a job without a change for longer than `stuck_after_s`, and a terminal status the
    contract's table does not give for what the simulator did."""
    row = Row(scenario=scenario, jobs=len(records), refused=refused, stuck_after_s=stuck_after_s)
    statuses: Counter[str] = Counter()
    gateways: Counter[str] = Counter()

    def flag(job_id: str, kind: str, detail: str) -> None:
        row.violations.append(Violation(job_id, kind, detail))

    for record in records:
        job_id = record.accepted.job_id
        gateways[record.accepted.gateway] += 1
        stored = record.stored
        completed = [p for p in record.predictions if p.status in COMPLETED]
        running = [p for p in record.predictions if p.status in RUNNING]
        if len(completed) > 1:
            row.beyond_one += len(completed) - 1
            flag(job_id, "beyond_one", ", ".join(f"{p.id}={p.status}" for p in completed))
        if running:
            row.left_running += len(running)
            flag(job_id, "left_running", ", ".join(f"{p.id}={p.status}" for p in running))
        if stored is None:
            row.lost += 1
            statuses["missing"] += 1
            flag(job_id, "lost", "accepted but not in the job-store")
            continue
        statuses[stored.status] += 1
        terminal = stored.status in TERMINAL
        if not terminal:
            row.lost += 1
            flag(job_id, "lost", f"still {stored.status} after quiet")
        # Times between the 202 and each change, and from the last change to now while the
        # job is still open.
        times = sorted({record.accepted.at, *stored.changes})
        if not terminal:
            times.append(now)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        longest_gap = max(gaps, default=0.0)
        if longest_gap > stuck_after_s:
            row.stuck += 1
            flag(job_id, "stuck", f"{longest_gap:.1f} s without a change (status {stored.status})")
        if terminal:
            to_terminal = max(stored.changes, default=record.accepted.at) - record.accepted.at
            row.longest_to_terminal_s = max(row.longest_to_terminal_s, to_terminal)
            if record.read is not None:
                fault = read_fault(record.read, stored.status, record.output or "")
                if fault is not None:
                    row.broken_stream += 1
                    flag(job_id, "broken_stream", fault)
            if stored.status == "succeeded" and record.streamed is not None:
                fault = stream_fault(record.streamed, record.output or "")
                if fault is not None:
                    row.broken_stream += 1
                    flag(job_id, "broken_stream", fault)
                elif "".join(t for _, t in record.streamed) == (record.output or ""):
                    row.whole_stream += 1
            expected = expected_status(record.predictions, stored)
            if stored.status != expected:
                row.wrong_status += 1
                flag(
                    job_id,
                    "wrong_status",
                    f"{stored.status} ({stored.error_code}), the simulator says {expected}: "
                    + ", ".join(f"{p.id}={p.status}" for p in record.predictions),
                )
    row.statuses = dict(statuses)
    row.jobs_by_gateway = dict(gateways)
    return row


def prediction_of(raw: dict[str, Any]) -> Prediction:
    return Prediction(id=str(raw["id"]), status=str(raw["status"]))
