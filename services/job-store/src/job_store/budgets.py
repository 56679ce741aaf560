"""The job-store's budget requests (reserve, release, usage) and the sweep of reservations
whose job never came.

No I/O here: the budget store comes in as an argument.
"""

from __future__ import annotations

import logging

from job_store.ports import BudgetStore, JobStoreObserver, NoObserver
from job_store.reads import RequestRejected
from jobs_proto.spend import (
    MAX_USAGE_SPAN_DAYS,
    BudgetDecision,
    BudgetState,
    GetUsage,
    ReleaseBudget,
    ReserveBudget,
    UsageReport,
    month_start,
)

log = logging.getLogger(__name__)


def _check_user(user_id: str) -> None:
    # Postgres refuses NUL in text: the caller's mistake, not an outage.
    if "\x00" in user_id:
        raise RequestRejected("422", "bad_user: the user id holds a NUL character")


async def reserve_budget(request: ReserveBudget, store: BudgetStore) -> BudgetDecision:
    """Admit a job against its budgets (reserving its amount) or refuse it."""
    _check_user(request.user_id)
    return await store.reserve(request)


async def release_budget(request: ReleaseBudget, store: BudgetStore) -> BudgetDecision:
    """Free the reservation of a job that was never published; `admitted` tells whether the
    job still holds its admission (the job-store knows it: its end settles the reservation)."""
    _check_user(request.user_id)
    known = await store.release(request.job_id, request.user_id)
    return BudgetDecision(admitted=known)


async def usage_report(query: GetUsage, store: BudgetStore) -> UsageReport:
    """The user's ended jobs over the span by type and by day, and the month's budget."""
    _check_user(query.user_id)
    if query.first > query.last:
        raise RequestRejected("422", "bad_span: the first day is after the last")
    if (query.last - query.first).days + 1 > MAX_USAGE_SPAN_DAYS:
        raise RequestRejected("422", f"bad_span: over {MAX_USAGE_SPAN_DAYS} days")
    by_type, by_day = await store.usage(query.user_id, query.first, query.last)
    budget = None
    if query.limit_micros is not None:
        period = month_start(query.today)
        totals = await store.month(query.user_id, period)
        budget = BudgetState(
            period_start=period,
            limit_micros=query.limit_micros,
            spent_micros=totals.spent_micros,
            reserved_micros=totals.reserved_micros,
        )
    return UsageReport(by_type=by_type, by_day=by_day, budget=budget)


async def release_stale_reservations(
    store: BudgetStore,
    *,
    grace_s: float,
    limit: int,
    observer: JobStoreObserver | None = None,
) -> int:
    """One sweep: free the reservations older than `grace_s` whose job the store does not
    know (a gateway that died between reserving and publishing). Their `requested`, should it
    come later anyway, reserves again when applied. Safe on every replica at once (each
    reservation is locked by one, skipped by the others). Returns how many were freed."""
    released = await store.release_stale(grace_s, limit)
    if released:
        log.warning(
            "reservations of jobs that never came released",
            extra={"count": len(released), "job_ids": [str(j) for j in released[:20]]},
        )
        (observer or NoObserver()).reservations_released(len(released))
    return len(released)
