"""What jobs spend, as pure rules: a job's price and reservation at admission, its usage and
cost when it ends, and whether a reservation fits a budget.

No I/O here. The sums over jobs (budgets per month and day, usage per day) are kept by the
database in the transaction that writes a job's end (migration 0004), from the columns these
rules fill in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from job_store.model import JobRow
from jobs_proto.events import JobCompleted, JobRequested
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.spend import BudgetDecision, BudgetScope, Metrics, Price, cost_micros, usd_to_micros
from jobs_proto.status import is_terminal

# Prediction statuses Replicate bills: what ran. A failed prediction costs 0 (as Replicate
# bills), an aborted one never started.
BILLED_STATUSES: Final = frozenset({"succeeded", "canceled"})


def admitted_with(event: JobRequested) -> tuple[Price | None, int | None]:
    """The price and the reservation a requested job is charged with: as the event says, else
    its type's as configured now (events older than prices), else none."""
    job_type = JOB_TYPES.get(event.job_type)
    price = event.price
    if price is None and job_type is not None:
        price = job_type.price
    reserved = event.reserved_micros
    if reserved is None and job_type is not None:
        reserved = usd_to_micros(job_type.max_cost_usd)
    return price, reserved


def with_price(row: JobRow, price: Price | None, reserved: int | None) -> JobRow:
    return replace(
        row,
        price_input_token_usd=None if price is None else price.per_input_token_usd,
        price_output_token_usd=None if price is None else price.per_output_token_usd,
        price_predict_second_usd=None if price is None else price.per_predict_second_usd,
        reserved_micros=reserved,
    )


def completion_metrics(event: JobCompleted) -> Metrics:
    return Metrics(
        predict_time_s=event.predict_time_s,
        input_tokens=event.input_tokens,
        output_tokens=event.output_tokens,
    )


def has_metrics(metrics: Metrics) -> bool:
    return any(
        v is not None for v in (metrics.predict_time_s, metrics.input_tokens, metrics.output_tokens)
    )


def prediction_cost(row: JobRow, event: JobCompleted) -> int:
    """What the final prediction cost at the job's price: what it ran, if it was billed."""
    if event.prediction_status not in BILLED_STATUSES:
        return 0
    return cost_micros(completion_metrics(event), row.price)


def ended(row: JobRow, completion: JobCompleted | None) -> JobRow:
    """`row`, which the job's end just made, with its usage: the final prediction's metrics and
    cost, or none and 0 for a job that ended without one (`job.failed`, canceled pending)."""
    if completion is None:
        return replace(
            row, predict_time_s=None, input_tokens=None, output_tokens=None, cost_micros=0
        )
    return replace(
        row,
        predict_time_s=completion.predict_time_s,
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cost_micros=prediction_cost(row, completion),
    )


def records_late_usage(row: JobRow, event: JobCompleted) -> bool:
    """Whether a completion of an ended job brings spend the job has not recorded: metrics,
    where the job's usage has none (its prediction ran on after the job ended, e.g. canceled
    after the job was canceled pending). Recorded once: afterwards the job has metrics."""
    return (
        is_terminal(row.status)
        and not has_metrics(row.metrics)
        and has_metrics(completion_metrics(event))
        and (row.prediction_id is None or row.prediction_id == event.prediction_id)
    )


def settled_micros(row: JobRow, summary: dict[str, Any]) -> int | None:
    """What a committed change (its new row and history summary) added to what was spent:
    the cost at the job's end, the late metrics' cost of an ended job, else None."""
    first_end = summary.get("from") is not None and not is_terminal(summary["from"])
    if (first_end and is_terminal(row.status)) or summary.get("usageRecorded"):
        # Late usage is recorded only where the job had no metrics, which cost 0.
        return row.cost_micros or 0
    return None


@dataclass(frozen=True, slots=True)
class Totals:
    """A budget period's sums as locked: what ended jobs spent, what running ones reserve."""

    spent_micros: int
    reserved_micros: int


def remaining(limit_micros: int, totals: Totals) -> int:
    return max(0, limit_micros - totals.spent_micros - totals.reserved_micros)


def fits(amount_micros: int, limit_micros: int | None, totals: Totals) -> bool:
    """Whether reserving `amount_micros` more keeps the period within its limit (None: none)."""
    if limit_micros is None:
        return True
    return totals.spent_micros + totals.reserved_micros + amount_micros <= limit_micros


def refusal(
    scope: BudgetScope, amount_micros: int, limit_micros: int | None, totals: Totals
) -> BudgetDecision | None:
    """The refusal when reserving `amount_micros` would pass the period's limit, else None."""
    if limit_micros is None or fits(amount_micros, limit_micros, totals):
        return None
    return BudgetDecision(
        admitted=False,
        exceeded=scope,
        limit_micros=limit_micros,
        remaining_micros=remaining(limit_micros, totals),
    )


ADMITTED: Final = BudgetDecision(admitted=True)
