"""Budgets at admission: which limits hold a user's job (their token's budget claim over
`USER_BUDGET_USD`, and `GLOBAL_BUDGET_USD_PER_DAY`), the reservation of the type's
`maxCostUsd` asked of the job-store before the job is published, its refusal (`402`), and its
release when the job was never published. No HTTP or NATS here: the job-store is the `Budgets`
port."""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from jobs_proto.spend import BudgetScope, ReleaseBudget, ReserveBudget, usd_to_micros
from jobs_runtime.errors import Unavailable

from .ports import Budgets, RequestedLog

log = logging.getLogger(__name__)

# The largest budget a setting or a token's claim may name: a trillion dollars is a billion
# times any real one, and its micro-dollars still fit Postgres's `bigint` with room for sums.
MAX_BUDGET_USD: Final = 10**12
DEFAULT_BUDGET_CLAIM: Final = "budget_usd"


def budget_claim_micros(value: object) -> int:
    """A token's budget claim as micro-dollars; `ValueError` saying why when it is not a
    non-negative number (a string, a bool, `NaN`, a negative). Above `MAX_BUDGET_USD` it is
    that: no budget is larger, and none is refused for being generous."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number but {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not a finite number")
    if value < 0:
        raise ValueError("negative")
    return usd_to_micros(min(value, MAX_BUDGET_USD))


class BudgetExceeded(Exception):
    """Reserving the job's `amount_micros` would pass the `scope` budget (`402`): its limit
    and what is left of it."""

    def __init__(
        self, scope: BudgetScope, limit_micros: int, remaining_micros: int, amount_micros: int
    ) -> None:
        period = "this month's budget" if scope == "user" else "today's budget for all users"
        super().__init__(
            f"this job may cost up to {_usd(amount_micros)}, more than the "
            f"{_usd(remaining_micros)} left of {period} of {_usd(limit_micros)}"
        )
        self.scope: BudgetScope = scope
        self.limit_micros = limit_micros
        self.remaining_micros = remaining_micros
        self.amount_micros = amount_micros


def _usd(micros: int) -> str:
    return f"${micros // 1_000_000}.{micros % 1_000_000:06d}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class BudgetGuard:
    """The budgets one admission is held to, and the job-store that keeps them. Built only
    when a budget applies: with none, admission asks nothing."""

    budgets: Budgets
    requested: RequestedLog
    user_limit_micros: int | None
    global_limit_micros: int | None

    async def reserve(
        self, user_id: str, job_type: str, job_id: uuid.UUID, amount_micros: int, at: datetime
    ) -> None:
        """Reserve `amount_micros` for the job, or raise `BudgetExceeded` (`Unavailable`
        when the job-store does not answer). Idempotent per job id in the job-store, so a
        retried admission of the same job holds one reservation."""
        decision = await self.budgets.reserve(
            ReserveBudget(
                job_id=job_id,
                user_id=user_id,
                job_type=job_type,
                amount_micros=amount_micros,
                at=at,
                user_limit_micros=self.user_limit_micros,
                global_limit_micros=self.global_limit_micros,
            )
        )
        if decision.admitted:
            return
        scope: BudgetScope = decision.exceeded or "user"
        fallback = self.user_limit_micros if scope == "user" else self.global_limit_micros
        limit = decision.limit_micros if decision.limit_micros is not None else fallback or 0
        remaining = max(0, decision.remaining_micros or 0)
        raise BudgetExceeded(scope, limit, remaining, amount_micros)

    async def release(self, user_id: str, job_id: uuid.UUID) -> None:
        """Free the reservation of a job whose publish failed; best effort (logged). Only
        when the stream shows no such job: a publish whose acknowledgement was lost may have
        stored it, and releasing the reservation of a job that runs could let a budget be
        passed. Left held, the job-store's reconciliation frees it."""
        extra = {"job_id": str(job_id), "user_id": user_id}
        try:
            if await self.requested.find_requested(job_id) is not None:
                log.warning("publish failed but the job was stored: reservation kept", extra=extra)
                return
            await self.budgets.release(ReleaseBudget(job_id=job_id, user_id=user_id))
        except Unavailable as exc:
            log.warning(
                "budget reservation not released; reconciliation frees it",
                extra={**extra, "reason": str(exc)},
            )
            return
        except Exception:
            # Never instead of the publish's own error, which is the answer.
            log.exception("budget reservation not released", extra=extra)
            return
        log.info("budget reservation released: the job was not published", extra=extra)


@dataclass(frozen=True, slots=True)
class Spending:
    """The configured budgets (`USER_BUDGET_USD`, `GLOBAL_BUDGET_USD_PER_DAY`, in micros;
    `None`: none) and the job-store keeping them."""

    budgets: Budgets
    user_micros: int | None = None
    global_micros: int | None = None

    def user_limit(self, claimed_micros: int | None) -> int | None:
        """A user's monthly limit: their token's claim, else the configured one."""
        return claimed_micros if claimed_micros is not None else self.user_micros

    def guard(self, claimed_micros: int | None, requested: RequestedLog) -> BudgetGuard | None:
        """What an admission for a caller with this claim must reserve against; `None` when
        no budget applies (nothing is asked then)."""
        user_limit = self.user_limit(claimed_micros)
        if user_limit is None and self.global_micros is None:
            return None
        return BudgetGuard(self.budgets, requested, user_limit, self.global_micros)
