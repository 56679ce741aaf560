"""The spend rules without I/O: a job's price and reservation at admission, its usage and
cost at its end (and late), what a change settled, and whether a reservation fits."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec
import pytest

from job_store.model import JobRow, job_view
from job_store.spend import (
    Totals,
    admitted_with,
    fits,
    refusal,
    remaining,
    settled_micros,
)
from job_store.transitions import Change, Park, next_row, transition
from jobs_proto.api import JobUsage
from jobs_proto.events import AnyJobEvent, JobCompleted
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.spend import BudgetDecision, Price, usd_to_micros
from jobs_proto.status import FinalPredictionStatus
from jobs_testkit.events import cancel, completed, failed, requested, submitted

JOB = uuid.UUID("00000000-0000-4000-8000-000000000021")
PRICE = Price(
    per_input_token_usd=Decimal("0.000001"),
    per_output_token_usd=Decimal("0.000004"),
    per_predict_second_usd=Decimal("0.0001"),
)
# 100 * 1 + 250 * 4 + 2.5 * 100 micro-dollars.
COST = 100 + 1000 + 250


def _priced() -> JobRow:
    row = next_row(None, msgspec.structs.replace(requested(JOB), price=PRICE, reserved_micros=5000))
    assert row is not None
    return row


def _ran(
    status: FinalPredictionStatus = "succeeded", *, prediction: str = "p-1", s: float = 3
) -> JobCompleted:
    return msgspec.structs.replace(
        completed(JOB, status, prediction=prediction, s=s),
        predict_time_s=2.5,
        input_tokens=100,
        output_tokens=250,
    )


def _apply(row: JobRow | None, *events: AnyJobEvent) -> JobRow:
    for event in events:
        change = transition(row, event)
        assert isinstance(change, Change), event
        row = change.row
    assert row is not None
    return row


def test_a_job_is_charged_the_price_and_reservation_its_request_carries() -> None:
    row = _priced()
    assert row.price == PRICE
    assert row.reserved_micros == 5000
    assert (row.cost_micros, row.usage) == (None, None)


def test_a_request_without_a_price_takes_its_types_and_unknown_types_none() -> None:
    script = JOB_TYPES["script_generation"]
    assert admitted_with(requested(JOB)) == (script.price, usd_to_micros(script.max_cost_usd))
    unknown = msgspec.structs.replace(requested(JOB), job_type="no_such_type")
    assert admitted_with(unknown) == (None, None)


@pytest.mark.parametrize(
    ("status", "cost"),
    [("succeeded", COST), ("canceled", COST), ("failed", 0), ("aborted", 0)],
)
def test_a_prediction_costs_what_it_ran_unless_it_failed(
    status: FinalPredictionStatus, cost: int
) -> None:
    row = _apply(_priced(), submitted(JOB, prediction="p-1"), _ran(status))
    assert (row.predict_time_s, row.input_tokens, row.output_tokens) == (2.5, 100, 250)
    assert row.cost_micros == cost
    assert job_view(row).usage == JobUsage(
        predict_time_s=2.5, input_tokens=100, output_tokens=250, cost_usd=cost / 1e6
    )


@pytest.mark.parametrize("end", ["failed", "canceled_pending"])
def test_a_job_that_never_ran_costs_0_with_no_metrics(end: str) -> None:
    event = failed(JOB) if end == "failed" else cancel(JOB)
    row = _apply(_priced(), event)
    assert (row.predict_time_s, row.input_tokens, row.output_tokens, row.cost_micros) == (
        None,
        None,
        None,
        0,
    )
    assert job_view(row).usage == JobUsage(
        predict_time_s=None, input_tokens=None, output_tokens=None, cost_usd=0.0
    )


def test_metrics_reported_after_the_jobs_end_are_recorded_once() -> None:
    ended = _apply(_priced(), cancel(JOB))
    late = transition(ended, _ran("canceled", s=9))
    assert isinstance(late, Change)
    row, entry = late
    assert (row.status, row.version, row.cost_micros, row.input_tokens) == (
        "canceled",
        ended.version + 1,
        COST,
        100,
    )
    assert entry.summary["usageRecorded"] is True
    assert (entry.summary["from"], entry.summary["to"]) == ("canceled", "canceled")
    assert settled_micros(row, entry.summary) == COST
    # Recorded once: the same news again, or news without metrics, changes nothing.
    assert transition(row, _ran("canceled", s=10)) is None
    assert transition(ended, completed(JOB, "canceled", prediction="p-1")) is None


def test_late_metrics_of_another_prediction_than_the_bound_one_are_parked() -> None:
    ended = _apply(_priced(), submitted(JOB, prediction="p-1"), failed(JOB))
    assert isinstance(transition(ended, _ran(prediction="p-2")), Park)
    late = transition(ended, _ran("failed"))
    assert isinstance(late, Change)
    assert late.row.cost_micros == 0  # a failed prediction is not billed
    assert late.row.output_tokens == 250


def test_what_a_change_settled_is_the_end_and_nothing_else() -> None:
    created = transition(None, msgspec.structs.replace(requested(JOB), price=PRICE))
    assert isinstance(created, Change)
    assert settled_micros(created.row, created.entry.summary) is None
    running = transition(created.row, submitted(JOB, prediction="p-1"))
    assert isinstance(running, Change)
    assert settled_micros(running.row, running.entry.summary) is None
    done = transition(running.row, _ran())
    assert isinstance(done, Change)
    assert settled_micros(done.row, done.entry.summary) == COST


def test_a_reservation_fits_up_to_the_limit_exactly() -> None:
    totals = Totals(spent_micros=300, reserved_micros=200)
    assert fits(500, 1000, totals)
    assert not fits(501, 1000, totals)
    assert fits(10**12, None, totals)
    assert refusal("user", 500, 1000, totals) is None
    assert refusal("global", 501, 1000, totals) == BudgetDecision(
        admitted=False, exceeded="global", limit_micros=1000, remaining_micros=500
    )
    # Remaining is floored at 0 (a late metric can push spend past the limit).
    assert remaining(1000, Totals(spent_micros=1200, reserved_micros=0)) == 0
    assert refusal("user", 1, 1000, Totals(1200, 0)) == BudgetDecision(
        admitted=False, exceeded="user", limit_micros=1000, remaining_micros=0
    )
