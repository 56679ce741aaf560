"""The operator's judgements, free of I/O: why a job is stuck, which jobs count as stuck, what
makes a stream or consumer unhealthy, and how a parked message goes back."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from jobs_ops.reports import (
    ConsumerHealth,
    PeerHealth,
    PredictionReport,
    StuckEntry,
    StuckReason,
)
from jobs_proto.api import StuckJob
from jobs_proto.subjects import SubjectError, Subjects

# A stream this full is unhealthy: JetStream refuses publishes at `max_bytes` (discard new
# would be worse; limits streams drop the oldest), so the operator acts before it gets there.
FULL_SHARE: Final = 0.9
# A durable consumer with work waiting and no delivery for this long is stalled.
STALLED_AFTER_S: Final = 300.0
BODY_CHARS: Final = 160


def short(body: bytes, limit: int = BODY_CHARS) -> str:
    """A message body on one line, cut to `limit` characters (outputs can be megabytes)."""
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stuck_since(job: StuckJob, now: datetime, older_than_s: float) -> tuple[float, bool] | None:
    """(age, past its deadline) when `job` is stuck: older than `older_than_s` since it started
    waiting, or past its type's deadline; None otherwise."""
    age_s = (now - job.processing_since).total_seconds()
    past_deadline = job.deadline_at is not None and now > job.deadline_at
    if age_s > older_than_s or past_deadline:
        return age_s, past_deadline
    return None


def why_stuck(job: StuckJob, prediction: PredictionReport | None) -> tuple[StuckReason, str]:
    """The likeliest reason a job has not ended, from its state and (when Replicate was asked)
    its prediction."""
    if job.prediction_id is None:
        return "no_prediction", (
            "no prediction yet: the ai-runner has not created one (is it consuming? see"
            " `jobsctl health`, consumer ai-runner)"
        )
    if prediction is None:
        return "prediction_unchecked", (
            f"prediction {job.prediction_id} created, no news since (REPLICATE_API_TOKEN is"
            " not set, so Replicate was not asked)"
        )
    if prediction.problem is not None:
        if prediction.status is None and "404" in prediction.problem:
            return "prediction_unknown", (
                f"Replicate knows no prediction {job.prediction_id}: {prediction.problem}"
            )
        return "prediction_unchecked", f"Replicate could not be asked: {prediction.problem}"
    if prediction.status in ("starting", "processing"):
        return "prediction_running", (
            f"prediction {job.prediction_id} is still {prediction.status} at Replicate"
        )
    ended = f" at {prediction.completed_at}" if prediction.completed_at else ""
    return "webhook_never_came", (
        f"prediction {job.prediction_id} ended {prediction.status}{ended} at Replicate, but"
        " neither its webhook nor the ai-runner's poll reached the job"
    )


def stuck_entry(
    job: StuckJob, age_s: float, past_deadline: bool, prediction: PredictionReport | None
) -> StuckEntry:
    reason, why = why_stuck(job, prediction)
    return StuckEntry(
        job=job,
        age_s=round(age_s, 1),
        past_deadline=past_deadline,
        reason=reason,
        why=why,
        prediction=prediction,
    )


def stream_problems(
    *,
    replicas: int,
    leader: str | None,
    peers: list[PeerHealth],
    clustered: bool,
    stored_bytes: int,
    max_bytes: int,
) -> list[str]:
    """What is wrong with one stream: no leader, a replica missing, offline or behind, or
    storage near its cap."""
    problems: list[str] = []
    if clustered and leader is None:
        problems.append("no leader: the stream takes no writes")
    if clustered and len(peers) + 1 < replicas:
        problems.append(f"{len(peers) + 1} of {replicas} replicas present")
    for peer in peers:
        if peer.offline:
            problems.append(f"replica {peer.name} offline")
        elif not peer.current:
            problems.append(f"replica {peer.name} not current (lag {peer.lag})")
    if max_bytes > 0 and stored_bytes >= FULL_SHARE * max_bytes:
        share = 100 * stored_bytes / max_bytes
        problems.append(f"{share:.0f}% of max_bytes used: publishes fail when it is full")
    return problems


def consumer_problems(
    *,
    durable: bool,
    pending: int,
    ack_pending: int,
    max_ack_pending: int,
    last_active: datetime | None,
    now: datetime,
    stalled_after_s: float = STALLED_AFTER_S,
) -> list[str]:
    """What is wrong with one consumer: a durable one with work waiting that nobody takes, or
    with as many messages in hand as it may have (it gets nothing more until some are acked)."""
    if not durable:
        return []  # an operator's or a reader's ephemeral consumer
    problems: list[str] = []
    if pending > 0:
        idle_s = None if last_active is None else (now - last_active).total_seconds()
        if idle_s is None or idle_s > stalled_after_s:
            since = "never delivered" if idle_s is None else f"nothing delivered for {idle_s:.0f}s"
            problems.append(f"stalled: {pending} pending, {since}")
    if max_ack_pending > 0 and ack_pending >= max_ack_pending:
        problems.append(f"ack pending at its limit ({ack_pending}): no new deliveries")
    return problems


def consumer_health(
    *,
    name: str,
    durable: bool,
    pending: int,
    ack_pending: int,
    max_ack_pending: int,
    redelivered: int,
    waiting: int,
    last_active: datetime | None,
    now: datetime,
) -> ConsumerHealth:
    return ConsumerHealth(
        name=name,
        durable=durable,
        pending=pending,
        ack_pending=ack_pending,
        max_ack_pending=max_ack_pending,
        redelivered=redelivered,
        waiting=waiting,
        last_active=last_active,
        problems=consumer_problems(
            durable=durable,
            pending=pending,
            ack_pending=ack_pending,
            max_ack_pending=max_ack_pending,
            last_active=last_active,
            now=now,
        ),
    )


def belongs_to(stream: str, jobs_stream: str) -> bool:
    """Whether a stream is one of this deployment's: the jobs stream, or one named after it
    (`<JOBS>_PARKED`, `<JOBS>_OUTPUT`, `KV_<JOBS>_CLAIMS`, `OBJ_<JOBS>_RESULTS`, ...)."""
    return stream == jobs_stream or stream.startswith(
        (f"{jobs_stream}_", f"KV_{jobs_stream}_", f"OBJ_{jobs_stream}_")
    )


def replay_target(subjects: Subjects, original_subject: str | None) -> str | None:
    """Where a parked message goes back to: its original subject when that is a job event of
    this deployment; None for anything else (a webhook that named no job, say)."""
    if original_subject is None:
        return None
    try:
        subjects.parse(original_subject)
    except SubjectError:
        return None
    return original_subject


def replay_message_id(parked_stream: str, seq: int, attempt: str) -> str:
    """The `Nats-Msg-Id` of one replay attempt: never the original's, nor an earlier
    attempt's. Within the jobs stream's duplicate window either would make JetStream drop the
    replay as a retried publish, so a replay tried again once its job exists would never reach
    the job-store. Consumers make a message seen twice harmless."""
    return f"replay:{parked_stream}:{seq}:{attempt}"
