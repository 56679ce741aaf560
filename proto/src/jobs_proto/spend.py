"""What jobs cost and what budgets allow: prices, the cost of one prediction, budget periods, and
the job-store's budget requests. Money is integer micro-dollars inside; dollars only at the API.

The cost rule is the contract's: input tokens * the input price + output tokens * the output
price + predict seconds * the per-second price (a null price counts 0), rounded to 6 decimals.
Prices are `Decimal`, so the rule is exact; sums are of integers, never of floats.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Final, Literal

import msgspec

from jobs_proto.base import Message

MICROS_PER_USD: Final = 1_000_000
_MICRO: Final = Decimal(1)
# A span `GET /api/usage` answers; longer ones are `422` (the aggregate is per day).
MAX_USAGE_SPAN_DAYS: Final = 366


class Price(Message, frozen=True):
    """What Replicate charges for a job type's model, per unit; None where it does not charge
    that way. Carried in `job.requested`, so a replay prices a job as it was priced then."""

    per_input_token_usd: Decimal | None = None
    per_output_token_usd: Decimal | None = None
    per_predict_second_usd: Decimal | None = None


class Metrics(Message, frozen=True):
    """What a finished prediction's `metrics` report, the units it is billed in."""

    predict_time_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


def _amount(units: float | int | None, price: Decimal | None) -> Decimal:
    if units is None or price is None:
        return Decimal(0)
    # `str` keeps a float's shortest decimal form (0.1, not 0.1000000000000000055...).
    return Decimal(str(units)) * price


def cost_micros(metrics: Metrics, price: Price) -> int:
    """The cost of a prediction that ran, in micro-dollars, rounded half up as the contract's
    6 decimals are."""
    total = (
        _amount(metrics.input_tokens, price.per_input_token_usd)
        + _amount(metrics.output_tokens, price.per_output_token_usd)
        + _amount(metrics.predict_time_s, price.per_predict_second_usd)
    )
    return int((total * MICROS_PER_USD).quantize(_MICRO, rounding=ROUND_HALF_UP))


def usd_to_micros(usd: Decimal | float | int) -> int:
    """Dollars (a setting, a claim, a configured maximum) as micro-dollars, half up."""
    exact = Decimal(str(usd)) * MICROS_PER_USD
    return int(exact.quantize(_MICRO, rounding=ROUND_HALF_UP))


def micros_to_usd(micros: int) -> float:
    """Micro-dollars as the API's dollars: exact to the 6 decimals the API promises."""
    return float(Decimal(micros) / MICROS_PER_USD)


def month_start(day: date) -> date:
    """The first day of `day`'s calendar month: the period of a user's budget."""
    return day.replace(day=1)


# The job-store's budget requests (`svc.job-store.reserve` / `release` / `usage`). ------------

BudgetScope = Literal["user", "global"]


class ReserveBudget(Message, frozen=True):
    """Reserve `amount_micros` for a job about to be admitted, against the user's month and the
    day of everyone, or refuse it. Idempotent per `job_id`: a retried request (an idempotent
    resubmission, a lost reply) finds its reservation and is admitted again without a second.

    A limit None is no budget of that kind; both None never reach the job-store (the gateway
    does not ask)."""

    job_id: uuid.UUID
    user_id: str
    job_type: str
    amount_micros: Annotated[int, msgspec.Meta(ge=0)]
    # When the job is admitted: its month and day are the periods it counts in.
    at: datetime
    user_limit_micros: Annotated[int, msgspec.Meta(ge=0)] | None = None
    global_limit_micros: Annotated[int, msgspec.Meta(ge=0)] | None = None


class BudgetDecision(Message, frozen=True):
    """The answer to `ReserveBudget`: admitted, or which budget it would pass and what is left
    of it (for the `402`)."""

    admitted: bool
    exceeded: BudgetScope | None = None
    limit_micros: int | None = None
    remaining_micros: int | None = None


class ReleaseBudget(Message, frozen=True):
    """Free a reservation whose job was never published (the publish failed). Releasing a
    reservation whose job the job-store knows changes nothing: the job's end settles it."""

    job_id: uuid.UUID
    user_id: str


class GetUsage(Message, frozen=True):
    """A user's spend over UTC days `first`..`last` (inclusive), and their budget for the month
    holding `today` when `limit_micros` is set."""

    user_id: str
    first: date
    last: date
    today: date
    limit_micros: Annotated[int, msgspec.Meta(ge=0)] | None = None


class TypeUsage(Message, frozen=True):
    jobs: int
    cost_micros: int


class BudgetState(Message, frozen=True):
    """A user's month: what ended jobs cost, what running ones hold reserved."""

    period_start: date
    limit_micros: int
    spent_micros: int
    reserved_micros: int

    @property
    def remaining_micros(self) -> int:
        return max(0, self.limit_micros - self.spent_micros - self.reserved_micros)


class UsageReport(Message, frozen=True):
    """The answer to `GetUsage`: ended jobs of the span by type and by day (the day a job was
    admitted is the day it counts on), and the month's budget."""

    by_type: dict[str, TypeUsage]
    by_day: dict[date, TypeUsage]
    budget: BudgetState | None = None
