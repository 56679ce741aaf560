"""A user's spend (`GET /api/usage`): the query's span of UTC days (default the current
calendar month; a bad date, `from` after `to` or over 366 days is `422` naming the parameter),
the job-store's `UsageReport` for it, and that report in dollars as `UsageView`."""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from datetime import date
from typing import Final

from jobs_proto.api import BudgetView, ProblemDetail, TypeUsageView, UsageView
from jobs_proto.spend import (
    MAX_USAGE_SPAN_DAYS,
    BudgetState,
    GetUsage,
    TypeUsage,
    UsageReport,
    micros_to_usd,
    month_start,
)

from .ports import Budgets
from .validation import InvalidRequest

# Only the contract's form: `date.fromisoformat` also takes `20260105` and `2026-W01-1`.
_DAY: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def month_end(day: date) -> date:
    """The last day of `day`'s calendar month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def _parse_day(name: str, values: list[str], default: date, errors: list[ProblemDetail]) -> date:
    if not values:
        return default
    if len(values) > 1:
        errors.append(ProblemDetail(parameter=name, detail=f"give `{name}` at most once"))
        return default
    raw = values[0]
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        detail = f"must be a date as YYYY-MM-DD, got {raw[:40]!r}"
        errors.append(ProblemDetail(parameter=name, detail=detail))
        return default


def parse_usage_span(parameters: Iterable[tuple[str, str]], today: date) -> tuple[date, date]:
    """`from` and `to` of the query (UTC days, inclusive), each defaulting to the bound of
    `today`'s month; `InvalidRequest` naming each bad parameter. Others are ignored."""
    given: dict[str, list[str]] = {}
    for name, value in parameters:
        given.setdefault(name, []).append(value)
    errors: list[ProblemDetail] = []
    first = _parse_day("from", given.get("from", []), month_start(today), errors)
    last = _parse_day("to", given.get("to", []), month_end(today), errors)
    if not errors:
        if first > last:
            detail = f"must not be after `to` ({last.isoformat()})"
            errors.append(ProblemDetail(parameter="from", detail=detail))
        elif (last - first).days + 1 > MAX_USAGE_SPAN_DAYS:
            detail = f"must be at most {MAX_USAGE_SPAN_DAYS} days from `from`, both included"
            errors.append(ProblemDetail(parameter="to", detail=detail))
    if errors:
        raise InvalidRequest(errors, "the query parameters are not valid")
    return first, last


def _type_view(usage: TypeUsage) -> TypeUsageView:
    return TypeUsageView(jobs=usage.jobs, cost_usd=micros_to_usd(usage.cost_micros))


def _budget_view(state: BudgetState) -> BudgetView:
    return BudgetView(
        period_start=state.period_start,
        limit_usd=micros_to_usd(state.limit_micros),
        spent_usd=micros_to_usd(state.spent_micros),
        reserved_usd=micros_to_usd(state.reserved_micros),
        remaining_usd=micros_to_usd(state.remaining_micros),
    )


def usage_view(first: date, last: date, report: UsageReport) -> UsageView:
    """The report in dollars; totals are summed in micro-dollars, then converted once."""
    return UsageView(
        from_=first,
        to=last,
        jobs=sum(u.jobs for u in report.by_type.values()),
        cost_usd=micros_to_usd(sum(u.cost_micros for u in report.by_type.values())),
        by_type={name: _type_view(u) for name, u in sorted(report.by_type.items())},
        by_day={day: _type_view(u) for day, u in sorted(report.by_day.items())},
        budget=None if report.budget is None else _budget_view(report.budget),
    )


async def read_usage(
    user_id: str,
    first: date,
    last: date,
    today: date,
    limit_micros: int | None,
    budgets: Budgets,
) -> UsageView:
    """The user's spend from `first` to `last`, with their month's budget when they have a
    limit (`limit_micros`); `Unavailable` when the job-store does not answer."""
    request = GetUsage(
        user_id=user_id, first=first, last=last, today=today, limit_micros=limit_micros
    )
    return usage_view(first, last, await budgets.usage(request))
