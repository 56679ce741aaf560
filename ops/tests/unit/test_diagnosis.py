"""The operator's judgements as pure functions: why a job is stuck, which jobs are, what makes a
stream or consumer unhealthy, where a parked message goes back, and how bodies are shown."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from jobs_ops.diagnosis import (
    belongs_to,
    consumer_problems,
    replay_message_id,
    replay_target,
    short,
    stream_problems,
    stuck_since,
    why_stuck,
)
from jobs_ops.reports import PeerHealth, PredictionReport
from jobs_proto.api import StuckJob
from jobs_proto.subjects import Subjects

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
JOB = uuid.UUID("6b1d8a8e-0f0e-4a43-9d59-0c5b7e6d1a21")


def stuck(
    *, waited_s: float, deadline_in_s: float | None = 600.0, prediction_id: str | None = "p1"
) -> StuckJob:
    return StuckJob(
        job_id=JOB,
        user_id="u",
        type="title_generation",
        version=2,
        prediction_id=prediction_id,
        attempts=1,
        cancel_requested=False,
        processing_since=NOW - timedelta(seconds=waited_s),
        deadline_at=None if deadline_in_s is None else NOW + timedelta(seconds=deadline_in_s),
        status="processing" if prediction_id else "pending",
    )


@pytest.mark.parametrize(
    ("waited_s", "deadline_in_s", "expected"),
    [
        (30.0, 600.0, None),  # young, deadline ahead
        (700.0, 600.0, (700.0, False)),  # older than asked
        (30.0, -1.0, (30.0, True)),  # young, but past its deadline
        (700.0, None, (700.0, False)),  # no deadline recorded (an old job)
        (30.0, None, None),
    ],
)
def test_stuck_is_older_than_asked_or_past_the_deadline(
    waited_s: float, deadline_in_s: float | None, expected: tuple[float, bool] | None
) -> None:
    job = stuck(waited_s=waited_s, deadline_in_s=deadline_in_s)
    assert stuck_since(job, NOW, older_than_s=600.0) == expected


def prediction(status: str | None, problem: str | None = None) -> PredictionReport:
    return PredictionReport(
        prediction_id="p1", status=status, completed_at="2026-12-07T02:00:00Z", problem=problem
    )


@pytest.mark.parametrize(
    ("prediction_id", "seen", "reason"),
    [
        (None, None, "no_prediction"),
        ("p1", None, "prediction_unchecked"),
        ("p1", prediction("starting"), "prediction_running"),
        ("p1", prediction("processing"), "prediction_running"),
        ("p1", prediction("succeeded"), "webhook_never_came"),
        ("p1", prediction("aborted"), "webhook_never_came"),
        ("p1", prediction(None, "HTTP 404"), "prediction_unknown"),
        ("p1", prediction(None, "no answer: ConnectError"), "prediction_unchecked"),
    ],
)
def test_why_a_job_is_stuck(
    prediction_id: str | None, seen: PredictionReport | None, reason: str
) -> None:
    found, why = why_stuck(stuck(waited_s=900, prediction_id=prediction_id), seen)
    assert found == reason
    assert why


def test_a_webhook_that_never_came_names_the_final_status_and_when() -> None:
    _, why = why_stuck(stuck(waited_s=900), prediction("succeeded"))
    assert "ended succeeded at 2026-12-07T02:00:00Z" in why


def peer(name: str, *, current: bool = True, offline: bool = False, lag: int = 0) -> PeerHealth:
    return PeerHealth(name=name, current=current, offline=offline, lag=lag, active_s=0.1)


def test_a_healthy_replicated_stream_has_no_problems() -> None:
    assert (
        stream_problems(
            replicas=3,
            leader="n1",
            peers=[peer("n2"), peer("n3")],
            clustered=True,
            stored_bytes=10,
            max_bytes=100,
        )
        == []
    )


def test_stream_problems_are_named() -> None:
    problems = stream_problems(
        replicas=3,
        leader=None,
        peers=[peer("n2", offline=True)],
        clustered=True,
        stored_bytes=95,
        max_bytes=100,
    )
    assert problems == [
        "no leader: the stream takes no writes",
        "2 of 3 replicas present",
        "replica n2 offline",
        "95% of max_bytes used: publishes fail when it is full",
    ]
    lagging = stream_problems(
        replicas=3,
        leader="n1",
        peers=[peer("n2"), peer("n3", current=False, lag=42)],
        clustered=True,
        stored_bytes=0,
        max_bytes=-1,
    )
    assert lagging == ["replica n3 not current (lag 42)"]


def test_a_single_server_stream_needs_no_leader() -> None:
    assert (
        stream_problems(
            replicas=1, leader=None, peers=[], clustered=False, stored_bytes=5, max_bytes=-1
        )
        == []
    )


@pytest.mark.parametrize(
    ("durable", "pending", "ack_pending", "idle_s", "expected"),
    [
        (True, 0, 0, None, []),
        (True, 5, 0, 10.0, []),  # busy, keeping up
        (True, 5, 0, 900.0, ["stalled: 5 pending, nothing delivered for 900s"]),
        (True, 5, 0, None, ["stalled: 5 pending, never delivered"]),
        (True, 0, 100, 1.0, ["ack pending at its limit (100): no new deliveries"]),
        (False, 5, 100, None, []),  # an ephemeral reader's consumer is nobody's work
    ],
)
def test_consumer_problems(
    durable: bool, pending: int, ack_pending: int, idle_s: float | None, expected: list[str]
) -> None:
    last_active = None if idle_s is None else NOW - timedelta(seconds=idle_s)
    assert (
        consumer_problems(
            durable=durable,
            pending=pending,
            ack_pending=ack_pending,
            max_ack_pending=100,
            last_active=last_active,
            now=NOW,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("stream", "mine"),
    [
        ("JOBS", True),
        ("JOBS_PARKED", True),
        ("JOBS_OUTPUT", True),
        ("KV_JOBS_CLAIMS", True),
        ("OBJ_JOBS_RESULTS", True),
        ("JOBSX", False),
        ("KV_OTHER", False),
        ("OTHER_JOBS", False),
    ],
)
def test_which_streams_belong_to_the_deployment(stream: str, mine: bool) -> None:
    assert belongs_to(stream, "JOBS") is mine


def test_a_parked_event_goes_back_to_its_subject_and_a_webhook_nowhere() -> None:
    subjects = Subjects("t1.")
    event = f"t1.job.completed.{JOB}"
    assert replay_target(subjects, event) == event
    assert replay_target(subjects, "POST /api/webhooks/replicate") is None
    assert replay_target(subjects, f"job.completed.{JOB}") is None  # another prefix
    assert replay_target(subjects, None) is None


def test_each_replay_attempt_has_a_message_id_of_its_own() -> None:
    assert replay_message_id("JOBS_PARKED", 7, "a1") == "replay:JOBS_PARKED:7:a1"
    assert replay_message_id("JOBS_PARKED", 7, "a1") != replay_message_id("JOBS_PARKED", 7, "b2")
    assert replay_message_id("JOBS_PARKED", 7, "a1") != replay_message_id("JOBS_PARKED", 8, "a1")


def test_bodies_are_shown_on_one_line_and_cut_short() -> None:
    assert short(b'{"a":\n  1}') == '{"a": 1}'
    long = short(b"x" * 1000, limit=20)
    assert len(long) == 20
    assert long.endswith("…")
    assert short(b"\xff") == "\ufffd"
