"""`GET /api/usage`'s parts without HTTP: the span of days (default the current month; a bad
date, `from` after `to` or more than 366 days is `422` naming the parameter) and the job-store's
report in dollars, its totals summed in micro-dollars."""

from datetime import date

import pytest

from gateway.usage import month_end, parse_usage_span, usage_view
from gateway.validation import InvalidRequest
from jobs_proto.spend import BudgetState, TypeUsage, UsageReport

TODAY = date(2028, 2, 10)  # a leap year's February


def span(**given: str) -> tuple[date, date]:
    return parse_usage_span(list(given.items()), TODAY)


def refused(*parameters: tuple[str, str]) -> list[tuple[str | None, str]]:
    with pytest.raises(InvalidRequest) as error:
        parse_usage_span(list(parameters), TODAY)
    return [(e.parameter, e.detail) for e in error.value.errors]


def test_the_default_span_is_the_current_calendar_month() -> None:
    assert span() == (date(2028, 2, 1), date(2028, 2, 29))
    assert span(**{"from": "2028-01-15"}) == (date(2028, 1, 15), date(2028, 2, 29))
    assert span(to="2028-02-03") == (date(2028, 2, 1), date(2028, 2, 3))
    assert month_end(date(2027, 12, 31)) == date(2027, 12, 31)


def test_a_span_of_366_days_is_the_longest() -> None:
    assert span(**{"from": "2028-01-01", "to": "2028-12-31"}) == (
        date(2028, 1, 1),
        date(2028, 12, 31),
    )
    [(parameter, detail)] = refused(("from", "2027-01-01"), ("to", "2028-01-02"))
    assert parameter == "to"
    assert "366" in detail


@pytest.mark.parametrize(
    "value", ["2028-02-30", "20280201", "2028-2-1", "tomorrow", "", "2028-02-01T00:00"]
)
def test_a_bad_date_names_its_parameter(value: str) -> None:
    [(parameter, _)] = refused(("from", value))
    assert parameter == "from"
    [(parameter, _)] = refused(("to", value))
    assert parameter == "to"


def test_from_after_to_and_repeated_parameters_are_refused() -> None:
    assert [p for p, _ in refused(("from", "2028-02-05"), ("to", "2028-02-04"))] == ["from"]
    assert [p for p, _ in refused(("to", "2028-02-05"), ("to", "2028-02-06"))] == ["to"]
    assert [p for p, _ in refused(("from", "x"), ("to", "y"))] == ["from", "to"]


def test_the_report_in_dollars_totals_summed_in_micros() -> None:
    # 0.1 + 0.2 in floats is not 0.3; in micro-dollars it is.
    report = UsageReport(
        by_type={
            "title_generation": TypeUsage(jobs=2, cost_micros=100_000),
            "video_outline": TypeUsage(jobs=1, cost_micros=200_000),
        },
        by_day={date(2028, 2, 3): TypeUsage(jobs=3, cost_micros=300_000)},
        budget=BudgetState(
            period_start=date(2028, 2, 1),
            limit_micros=250_000,
            spent_micros=300_000,
            reserved_micros=20_000,
        ),
    )
    view = usage_view(date(2028, 2, 1), date(2028, 2, 29), report)
    assert (view.jobs, view.cost_usd) == (3, 0.3)
    assert view.by_type["video_outline"].cost_usd == 0.2
    assert view.by_day[date(2028, 2, 3)].jobs == 3
    assert view.budget is not None
    assert (view.budget.limit_usd, view.budget.spent_usd, view.budget.reserved_usd) == (
        0.25,
        0.3,
        0.02,
    )
    # Spent past the limit (a job that cost more than it reserved): nothing left, not less.
    assert view.budget.remaining_usd == 0
    empty = usage_view(date(2028, 2, 1), date(2028, 2, 29), UsageReport(by_type={}, by_day={}))
    assert (empty.jobs, empty.cost_usd, empty.budget) == (0, 0, None)
