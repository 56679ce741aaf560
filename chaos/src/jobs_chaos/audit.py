"""The audit of one scenario: every accepted job, as the job-store recorded it, against every
prediction the simulator made for it. Pure functions over plain records, so that a fabricated
bad record proves each check can fail."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Mapping
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
    # What the job was asked to write about: one per submission, so that a second job for the
    # same submission (an idempotency key not honoured) shows.
    topic: str = ""


@dataclass(frozen=True)
class Cancel:
    """A user's `POST /api/jobs/{id}/cancel`, as the load generator saw it: when it was first
    sent, when its definitive answer came and what it was (`202`: accepted, `409`: the job had
    already ended; None: no definitive answer before the client gave up), and the moment aimed
    at (`pending`, `processing`, `end`)."""

    sent_at: float
    answered_at: float | None
    status_code: int | None
    moment: str = ""

    @property
    def accepted(self) -> bool:
        return self.status_code == 202


@dataclass(frozen=True)
class StoredJob:
    """The job-store's row, and the wall-clock times of every change it applied."""

    status: str
    prediction_id: str | None
    error_code: str | None
    created_at: float
    changes: tuple[float, ...]
    # When it reached its terminal status (None: not yet, or not known): a change after it
    # (the spend of a prediction that reported after a cancel) is no wait of the job's.
    ended_at: float | None = None

    @property
    def waited_changes(self) -> tuple[float, ...]:
        """The changes up to the one that ended the job: the first recorded at or after its
        end (the end is the event's time, the record the store's, a little later)."""
        if self.ended_at is None:
            return self.changes
        ended = self.ended_at
        before = tuple(c for c in self.changes if c < ended)
        after = [c for c in self.changes if c >= ended]
        return before + tuple(after[:1])


@dataclass(frozen=True)
class Prediction:
    """One prediction the simulator created for a job, as it shows it now."""

    id: str
    status: str
    # Wall-clock times from the simulator: creation, and the end (None while running).
    created_at: float | None = None
    completed_at: float | None = None


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
    # The user's cancel, where the load asked for one.
    cancel: Cancel | None = None


@dataclass(frozen=True)
class Watched:
    """What a client watching a job's events saw in the end: the terminal status (None: none
    seen), why it gave up (None: it did not), and its longest time disconnected."""

    status: str | None
    error: str | None
    longest_disconnected_s: float


@dataclass(frozen=True)
class Exit:
    """A replica stopped as Kubernetes stops a pod: its exit code on SIGTERM (None: still
    running when the budget ran out, then killed), seconds from SIGTERM to exit, the budget
    (`terminationGracePeriodSeconds` less the preStop pause), and whether its log says the
    shutdown grace ran out with work still in hand; and the streams it held at SIGTERM (-1:
    not known)."""

    replica: str
    code: int | None
    seconds: float
    budget_s: float
    grace_ran_out: bool = False
    streams: int = 0
    # Wall-clock time of the SIGTERM.
    at: float = 0.0


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
    # User cancels: asked, and those not honoured (see `cancel_fault`); `cancels_raced` are
    # accepted cancels whose prediction ended on its own before the cancel could reach it.
    cancels: int = 0
    cancel_lost: int = 0
    cancels_raced: int = 0
    cancel_answers: dict[str, int] = field(default_factory=dict)
    # Jobs in the store for a submission this scenario made that the client was not told of.
    unanswered_jobs: int = 0
    longest_to_terminal_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    jobs_by_gateway: dict[str, int] = field(default_factory=dict)
    # Work each replica did during the scenario, from its own metrics: `{service: {replica: n}}`.
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    stuck_after_s: float = 0.0
    cancel_window_s: float = 0.0
    # Where the scenario watches each job's events: the watchers, those that never saw their
    # job's terminal state (or saw another), and the longest any spent disconnected.
    watched: int = 0
    missed_end: int = 0
    longest_disconnected_s: float = 0.0
    # Where the scenario stops replicas as a rollout does: each stop, and those not clean
    # (an exit code but 0, over the budget, or the shutdown grace ran out).
    exits: list[Exit] = field(default_factory=list)
    bad_exits: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.beyond_one or self.left_running or self.stuck) and (
            not (
                self.wrong_status
                or self.broken_stream
                or self.cancel_lost
                or self.missed_end
                or self.bad_exits
            )
        )

    @property
    def idle_replicas(self) -> list[str]:
        """Replicas that did nothing in this scenario (the load did not reach them)."""
        return sorted(r for by in self.shares.values() for r, n in by.items() if n <= 0)


def expected_status(
    predictions: tuple[Prediction, ...], stored: StoredJob, cancel: Cancel | None = None
) -> str:
    """What the contract's table makes of what the simulator did: the one completed
    prediction's status; none completed, `canceled` if its user's cancel was accepted (or may
    have been: no answer), else `failed` (every create failed, or the prediction was aborted or
    canceled by its deadline). A job its user canceled may end `canceled` whatever its
    predictions did: `cancel_fault` judges those."""
    completed = [p for p in predictions if p.status in COMPLETED]
    user_canceled = cancel is not None and cancel.status_code in (202, None)
    if user_canceled and (stored.status == "canceled" or not completed):
        return "canceled"
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


def cancel_fault(
    cancel: Cancel, stored: StoredJob, predictions: tuple[Prediction, ...], window_s: float
) -> tuple[str | None, bool]:
    """Whether a user's cancel was honoured: the fault (None: honoured), and whether it was a
    race the system may lose (accepted, but the prediction ended on its own first).

    - `202`: end `canceled` with no prediction of it completed (each one canceled, or none
      made); or end as its prediction did where that prediction ended before the cancel was
      accepted, or within `window_s` after (the cancel on its way to Replicate: a race);
    - `409`: have ended `succeeded` or `failed`;
    - none (the client gave up): end `canceled` with no prediction completed, or as its
      prediction did;
    - anything else: the answer itself is the fault.
    """
    completed = [p for p in predictions if p.status in COMPLETED]
    if cancel.status_code == 409:
        if stored.status == "canceled":
            return "the cancel was answered 409 (already ended), yet the job ended canceled", False
        return None, False
    if cancel.status_code not in (202, None):
        return f"the cancel was answered {cancel.status_code}", False
    if stored.status == "canceled":
        if completed:
            ran = ", ".join(f"{p.id}={p.status}" for p in completed)
            return f"canceled, yet its prediction ran to the end: {ran}", False
        return None, False
    if cancel.status_code is None or stored.status not in COMPLETED or not completed:
        # No answer: either outcome is the user's; no completed prediction: the status rule
        # judges (the job should have ended canceled).
        return None, False
    bound = [p for p in completed if p.id == stored.prediction_id] or completed
    ended = bound[0].completed_at
    accepted = cancel.answered_at if cancel.answered_at is not None else cancel.sent_at
    if ended is None:
        return f"{stored.status} after the cancel was accepted, the prediction's end unknown", False
    late = ended - accepted
    if late > window_s:
        return (
            f"{stored.status}: the cancel was accepted {late:.1f} s before its prediction "
            f"{bound[0].id} ended on its own (allowed {window_s:.1f} s)"
        ), False
    return None, late > 0


def idle_gaps(times: list[float], running: list[tuple[float, float]]) -> list[float]:
    """The gaps between consecutive `times`, less the parts during which one of the job's
    predictions was running: a model's own time is not the system's delay."""
    gaps = []
    for a, b in itertools.pairwise(times):
        covered = 0.0
        cursor = a
        for start, end in sorted(running):
            start, end = max(start, cursor), min(end, b)
            if end > start:
                covered += end - start
                cursor = end
        gaps.append(b - a - covered)
    return gaps


def audit(
    scenario: str,
    records: list[JobRecord],
    *,
    refused: int,
    now: float,
    stuck_after_s: float,
    cancel_window_s: float = 0.0,
    unanswered_jobs: int = 0,
    duplicate_jobs: tuple[str, ...] = (),
) -> Row:
    """Count, per kind, the jobs that break a promise: lost (accepted but absent or not
    terminal), more than one completed prediction, a prediction still running after quiet,
    a job without a change for longer than `stuck_after_s` while none of its predictions ran,
    a terminal status the contract's table does not give for what the simulator did, and a
    user's cancel not honoured (`cancel_fault`, with `cancel_window_s`). `duplicate_jobs`, a
    second job for a submission already answered with another, count beyond one."""
    row = Row(
        scenario=scenario,
        jobs=len(records),
        refused=refused,
        stuck_after_s=stuck_after_s,
        cancel_window_s=cancel_window_s,
        unanswered_jobs=unanswered_jobs,
    )
    answers: Counter[str] = Counter()
    for job_id in duplicate_jobs:
        row.beyond_one += 1
        row.violations.append(
            Violation(job_id, "beyond_one", "a second job for a submission already answered")
        )
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
        cancel = record.cancel
        if cancel is not None:
            row.cancels += 1
            answers[str(cancel.status_code or "none")] += 1
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
        times = sorted({record.accepted.at, *stored.waited_changes})
        if not terminal:
            times.append(now)
        runs = [
            (p.created_at, p.completed_at if p.completed_at is not None else now)
            for p in record.predictions
            if p.created_at is not None
        ]
        longest_gap = max(idle_gaps(times, runs), default=0.0)
        if longest_gap > stuck_after_s:
            row.stuck += 1
            flag(job_id, "stuck", f"{longest_gap:.1f} s without a change (status {stored.status})")
        if terminal:
            to_terminal = (
                max(stored.waited_changes, default=record.accepted.at) - record.accepted.at
            )
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
            if cancel is not None:
                fault, raced = cancel_fault(cancel, stored, record.predictions, cancel_window_s)
                row.cancels_raced += raced
                if fault is not None:
                    row.cancel_lost += 1
                    flag(job_id, "cancel_lost", f"{fault} (aimed at {cancel.moment or '?'})")
            expected = expected_status(record.predictions, stored, cancel)
            if stored.status != expected:
                row.wrong_status += 1
                flag(
                    job_id,
                    "wrong_status",
                    f"{stored.status} ({stored.error_code}), the simulator says {expected}: "
                    + ", ".join(f"{p.id}={p.status}" for p in record.predictions)
                    + (
                        ""
                        if cancel is None
                        else f"; its user's cancel answered {cancel.status_code or 'nothing'}"
                        f" (aimed at {cancel.moment or '?'})"
                    ),
                )
    row.statuses = dict(statuses)
    row.jobs_by_gateway = dict(gateways)
    row.cancel_answers = dict(answers)
    return row


def audit_watchers(
    row: Row, stored: Mapping[str, str | None], watched: Mapping[str, Watched]
) -> None:
    """Every watched job's watcher must have seen its terminal state, the one the job-store
    holds (`stored`: job id to status, None where the job is missing), whatever reconnects it
    took; the row keeps the longest time any spent disconnected."""
    row.watched = len(watched)
    for job_id, seen in watched.items():
        row.longest_disconnected_s = max(row.longest_disconnected_s, seen.longest_disconnected_s)
        status = stored.get(job_id)
        if seen.error is not None or seen.status is None:
            fault = f"the watcher saw no terminal state: {seen.error or 'cut off'}"
        elif seen.status != status:
            fault = f"the watcher saw {seen.status}, the job is {status}"
        else:
            continue
        row.missed_end += 1
        row.violations.append(Violation(job_id, "missed_end", fault))


def audit_exits(row: Row, exits: list[Exit]) -> None:
    """Every replica stopped must have exited 0 on SIGTERM within its budget, and without the
    shutdown grace running out (its work cut off rather than finished)."""
    row.exits = list(exits)
    for stop in exits:
        faults = []
        if stop.code != 0:
            faults.append(f"exit code {stop.code}")
        if stop.seconds > stop.budget_s:
            faults.append(f"{stop.seconds:.1f} s to exit, budget {stop.budget_s:.0f} s")
        if stop.grace_ran_out:
            faults.append("the shutdown grace ran out with work in hand")
        if faults:
            row.bad_exits += 1
            row.violations.append(Violation(stop.replica, "bad_exit", "; ".join(faults)))


def _epoch(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    return dt.datetime.fromisoformat(value).timestamp()


def prediction_of(raw: dict[str, Any]) -> Prediction:
    return Prediction(
        id=str(raw["id"]),
        status=str(raw["status"]),
        created_at=_epoch(raw.get("created_at")),
        completed_at=_epoch(raw.get("completed_at")),
    )
