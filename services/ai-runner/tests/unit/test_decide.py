"""The claim loop's decisions, table-driven: every row of `decide`, then a property over any
claim: a runner never creates for a job whose claim already settled it, nor past its deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai_runner.decide import (
    NOT_LOOKED,
    Adopt,
    Announce,
    Create,
    DeadlinePassed,
    Decision,
    Looked,
    LookForPrediction,
    NothingToDo,
    RepeatFailure,
    Wait,
    creating,
    decide,
)
from ai_runner.ports import Claim
from jobs_proto.events import JobError

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(seconds=60)  # the job's deadline, when time is left
EARLIER = NOW - timedelta(seconds=1)  # the job's deadline, when it passed
WINDOW_S = 30.0
ERROR = JobError(code="prediction_rejected", message="bad input")


def since(seconds_ago: float) -> datetime:
    return NOW - timedelta(seconds=seconds_ago)


ROWS: list[tuple[str, Claim | None, datetime, str | Looked | None, Decision]] = [
    ("no claim, time left: create", None, LATER, NOT_LOOKED, Create()),
    ("no claim, deadline passed: fail", None, EARLIER, NOT_LOOKED, DeadlinePassed()),
    ("canceled: nothing", Claim(canceled=True), LATER, NOT_LOOKED, NothingToDo()),
    (
        "canceled wins over a prediction",
        Claim(canceled=True, prediction_id="p"),
        LATER,
        NOT_LOOKED,
        NothingToDo(),
    ),
    ("failed: say so again", Claim(failed=ERROR), LATER, NOT_LOOKED, RepeatFailure(ERROR)),
    (
        "failed, even past the deadline",
        Claim(failed=ERROR),
        EARLIER,
        NOT_LOOKED,
        RepeatFailure(ERROR),
    ),
    ("recorded: announce again", Claim(prediction_id="p"), LATER, NOT_LOOKED, Announce("p")),
    (
        "recorded, even past the deadline",
        Claim(prediction_id="p"),
        EARLIER,
        NOT_LOOKED,
        Announce("p"),
    ),
    (
        "create in flight: look in the events first",
        Claim(creating_since=since(1)),
        LATER,
        NOT_LOOKED,
        LookForPrediction(),
    ),
    (
        "the events name a prediction: adopt it",
        Claim(creating_since=since(1)),
        LATER,
        "p",
        Adopt("p"),
    ),
    (
        "adopt even past the window and the deadline",
        Claim(creating_since=since(100)),
        EARLIER,
        "p",
        Adopt("p"),
    ),
    (
        "nothing in the events, within the window: wait the rest",
        Claim(creating_since=since(10)),
        LATER,
        None,
        Wait(20.0),
    ),
    (
        "nothing in the events, window passed: create again",
        Claim(creating_since=since(45)),
        LATER,
        None,
        Create(waited_s=45.0),
    ),
    (
        "window passed and deadline too: fail",
        Claim(creating_since=since(45)),
        EARLIER,
        None,
        DeadlinePassed(),
    ),
    (
        "a failed create left no create in flight: create again",
        Claim(attempts=2, last_error="HTTP 500"),
        LATER,
        NOT_LOOKED,
        Create(),
    ),
    (
        "no create in flight, deadline passed: fail",
        Claim(attempts=2),
        EARLIER,
        NOT_LOOKED,
        DeadlinePassed(),
    ),
]


@pytest.mark.parametrize(
    ("claim", "deadline", "found", "expected"),
    [row[1:] for row in ROWS],
    ids=[row[0] for row in ROWS],
)
def test_decide(
    claim: Claim | None, deadline: datetime, found: str | Looked | None, expected: Decision
) -> None:
    assert (
        decide(claim, NOW, deadline_at=deadline, binding_wait_s=WINDOW_S, found=found) == expected
    )


def test_the_deadline_itself_is_past() -> None:
    assert decide(None, NOW, deadline_at=NOW, binding_wait_s=WINDOW_S) == DeadlinePassed()


def test_creating_marks_the_create_in_flight_and_keeps_the_rest() -> None:
    claim = Claim(attempts=2, last_error="HTTP 500")
    assert creating(claim, NOW, "script_generation") == Claim(
        attempts=2, last_error="HTTP 500", creating_since=NOW, job_type="script_generation"
    )
    assert creating(None, NOW, "x") == Claim(creating_since=NOW, job_type="x")


claims = st.builds(
    Claim,
    prediction_id=st.none() | st.just("p"),
    creating_since=st.none() | st.integers(0, 120).map(since),
    attempts=st.integers(0, 5),
    canceled=st.booleans(),
    failed=st.none() | st.just(ERROR),
)


@given(
    claim=st.none() | claims,
    deadline_in_s=st.integers(-60, 60),
    found=st.sampled_from([NOT_LOOKED, None, "q"]),
)
def test_a_settled_job_is_never_created_again_nor_one_past_its_deadline(
    claim: Claim | None, deadline_in_s: int, found: str | Looked | None
) -> None:
    deadline = NOW + timedelta(seconds=deadline_in_s)
    decision = decide(claim, NOW, deadline_at=deadline, binding_wait_s=WINDOW_S, found=found)
    if isinstance(decision, Create):
        assert deadline > NOW
        assert claim is None or (
            claim.prediction_id is None and not claim.canceled and claim.failed is None
        )
        if claim is not None and claim.creating_since is not None:
            assert found is None  # the events were read and named nothing
            assert decision.waited_s is not None
            assert decision.waited_s >= WINDOW_S
    if isinstance(decision, Wait):
        assert 0 < decision.remaining_s <= WINDOW_S
