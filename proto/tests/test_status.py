import pytest

from jobs_proto.status import (
    DEADLINE_EXCEEDED,
    PREDICTION_FAILED,
    RESULT_EXPIRED,
    TERMINAL_JOB_STATUSES,
    FinalPredictionStatus,
    JobStatus,
    is_terminal,
    job_outcome,
)


@pytest.mark.parametrize(
    ("prediction", "cancel_requested", "data_removed", "has_output", "expected"),
    [
        ("succeeded", False, False, True, ("succeeded", None)),
        ("succeeded", False, True, True, ("succeeded", None)),
        ("succeeded", False, True, False, ("failed", RESULT_EXPIRED)),
        ("failed", False, False, False, ("failed", PREDICTION_FAILED)),
        ("failed", True, False, False, ("failed", PREDICTION_FAILED)),
        ("canceled", True, False, False, ("canceled", None)),
        ("canceled", False, False, False, ("failed", DEADLINE_EXCEEDED)),
        ("aborted", False, False, False, ("failed", DEADLINE_EXCEEDED)),
        ("aborted", True, False, False, ("failed", DEADLINE_EXCEEDED)),
    ],
)
def test_contract_table(
    prediction: FinalPredictionStatus,
    cancel_requested: bool,
    data_removed: bool,
    has_output: bool,
    expected: tuple[JobStatus, str | None],
) -> None:
    outcome = job_outcome(
        prediction,
        cancel_requested=cancel_requested,
        data_removed=data_removed,
        has_output=has_output,
    )
    assert outcome == expected


def test_terminal_statuses() -> None:
    assert {"succeeded", "failed", "canceled"} == TERMINAL_JOB_STATUSES
    assert not is_terminal("pending")
    assert not is_terminal("processing")
    assert is_terminal("canceled")
