"""The text form of the reports: each fact on its line, problems spelled out."""

import uuid
from datetime import UTC, datetime

from jobs_ops.diagnosis import consumer_health
from jobs_ops.render import health_text, job_text, parked_text, replay_text
from jobs_ops.reports import (
    HealthReport,
    JobReport,
    ParkedMessage,
    ParkedReport,
    PredictionReport,
    Replayed,
    ReplayReport,
    StreamEvent,
    StreamHealth,
)
from jobs_proto.api import JobHistoryEntry

AT = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
JOB = uuid.UUID("6b1d8a8e-0f0e-4a43-9d59-0c5b7e6d1a21")


def test_a_job_shows_its_state_history_predictions_events_and_notes() -> None:
    report = JobReport(
        job_id=JOB,
        source="job-store",
        job={
            "status": "failed",
            "type": "title_generation",
            "userId": "u1",
            "version": 3,
            "predictionId": "p1",
            "createdAt": "2026-12-07T02:59:00Z",
            "updatedAt": "2026-12-07T03:00:00Z",
            "completedAt": "2026-12-07T03:00:00Z",
            "error": {"code": "deadline_exceeded", "message": "too slow"},
        },
        history=[
            JobHistoryEntry(
                seq=1,
                kind="requested",
                occurred_at=AT,
                recorded_at=AT,
                source="gateway",
                message_id=f"requested:{JOB}",
                summary={"to": "pending"},
            )
        ],
        predictions=[PredictionReport(prediction_id="p1", status="canceled")],
        events=[
            StreamEvent(
                seq=41,
                time=AT,
                kind="requested",
                subject=f"job.requested.{JOB}",
                msg_id=f"requested:{JOB}",
                body='{"kind":"requested"}',
            )
        ],
        notes=["a note"],
    )
    text = job_text(report)
    assert text.splitlines()[0] == f"job {JOB}  failed  (from job-store)"
    assert "  error deadline_exceeded: too slow" in text
    assert "history (1)" in text
    assert '{"to":"pending"}' in text
    assert "  p1  canceled  created -" in text
    assert f"  seq 41     2026-12-07T03:00:00.000Z  requested        msg-id requested:{JOB}" in text
    assert text.endswith("notes\n  - a note")


def test_an_unknown_job_says_so() -> None:
    report = JobReport(
        job_id=JOB, source=None, job=None, history=None, predictions=[], events=[], notes=[]
    )
    assert job_text(report).startswith(f"job {JOB}: not in the job-store")


def test_parked_and_replayed_messages() -> None:
    parked = ParkedReport(
        stream="JOBS_PARKED",
        items=[
            ParkedMessage(
                seq=3,
                time=AT,
                reason="no_such_job",
                original_subject="POST /api/webhooks/replicate",
                detail="names no job",
                msg_id="parked:webhook:w1",
                body="{}",
                replayable=False,
            )
        ],
    )
    text = parked_text(parked)
    assert "JOBS_PARKED: 1 parked message(s)" in text
    assert "no_such_job  from POST /api/webhooks/replicate  (not replayable)" in text
    replayed = ReplayReport(
        stream="JOBS_PARKED",
        items=[Replayed(seq=3, outcome="skipped", subject=None, detail="nowhere")],
    )
    assert "seq 3      skipped   -  nowhere" in replay_text(replayed)
    assert replay_text(ReplayReport(stream="JOBS_PARKED", items=[])).endswith("nothing to replay")


def test_health_names_each_stream_consumer_and_problem() -> None:
    stalled = consumer_health(
        name="job-store",
        durable=True,
        pending=7,
        ack_pending=0,
        max_ack_pending=1000,
        redelivered=2,
        waiting=1,
        last_active=None,
        now=AT,
    )
    report = HealthReport(
        healthy=False,
        streams=[
            StreamHealth(
                name="JOBS",
                replicas=1,
                leader="n1",
                peers=[],
                messages=12,
                bytes=2048,
                max_bytes=-1,
                consumers=[stalled],
                problems=[],
            )
        ],
        missing=["OTHER"],
    )
    text = health_text(report)
    assert text.splitlines()[0] == "JOBS  R1  leader n1"
    assert "  messages 12  bytes 2.0 KiB of unlimited  OK" in text
    assert "consumer job-store (durable)  pending 7" in text
    assert "PROBLEM: stalled: 7 pending, never delivered" in text
    assert "OTHER  MISSING" in text
    assert text.endswith("UNHEALTHY")
