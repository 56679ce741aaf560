"""Postgres behind the `BudgetStore` port: reservations against a user's month and everyone's
day under row locks, their release, and the usage sums.

Lock order, shared with the settlement triggers of migration 0004: a reservation row, the
budgets' advisory lock, then month rows, then day rows (each in key order), so concurrent
writers queue rather than deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Final, cast

from job_store.adapters.columns import pg_text
from job_store.adapters.database import UNAVAILABLE, Connection, Pool, unavailable
from job_store.spend import ADMITTED, Totals, refusal
from jobs_proto.spend import BudgetDecision, ReserveBudget, TypeUsage, month_start

# A new reservation, unless its job exists already or it has one (a retried request): then
# nothing is returned and nothing added.
_RESERVE: Final = """
INSERT INTO budget_reservations (job_id, user_id, month, day, amount_micros)
SELECT $1, $2, $3, $4, $5
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = $1)
ON CONFLICT (job_id) DO NOTHING
RETURNING true
"""
# The budgets' advisory lock (migration 0004's `spend_add` takes it too): every writer of month
# and day rows holds it first, which is what keeps them from deadlocking.
BUDGETS_LOCK_KEY: Final = int.from_bytes(b"budgets!", "big")
# Upsert and lock in one round trip, after the advisory lock: the no-op update takes the row
# lock `FOR UPDATE` would.
_LOCK_MONTH: Final = f"""
INSERT INTO budget_months AS m (user_id, month)
SELECT $1, $2 FROM (SELECT pg_advisory_xact_lock({BUDGETS_LOCK_KEY})) AS budgets
ON CONFLICT (user_id, month) DO UPDATE SET spent_micros = m.spent_micros
RETURNING spent_micros, reserved_micros
"""
_LOCK_DAY: Final = """
INSERT INTO budget_days AS d (day) VALUES ($1)
ON CONFLICT (day) DO UPDATE SET spent_micros = d.spent_micros
RETURNING spent_micros, reserved_micros
"""
_ADD: Final = "SELECT spend_add($1::text[], $2::date[], $3::date[], $4::bigint[], $5::bigint[])"
# Locked first, then deleted in a statement of its own: that one's snapshot sees a job row
# committed while it waited for the lock (the job's `requested` applied meanwhile keeps it).
_LOCK_RESERVATION: Final = """
SELECT job_id FROM budget_reservations WHERE job_id = $1 AND user_id = $2 FOR UPDATE
"""
_LOCK_STALE: Final = """
SELECT job_id FROM budget_reservations AS r
WHERE created_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = r.job_id)
ORDER BY created_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""
_RELEASE: Final = """
DELETE FROM budget_reservations AS r
WHERE job_id = ANY($1::uuid[]) AND NOT EXISTS (SELECT 1 FROM jobs WHERE id = r.job_id)
RETURNING job_id, user_id, month, day, amount_micros
"""
_JOB_EXISTS: Final = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1)"
_BY_TYPE: Final = """
SELECT job_type AS key, sum(jobs)::bigint AS jobs, sum(cost_micros)::bigint AS cost
FROM usage_days WHERE user_id = $1 AND day BETWEEN $2 AND $3
GROUP BY job_type
"""
_BY_DAY: Final = """
SELECT day AS key, sum(jobs)::bigint AS jobs, sum(cost_micros)::bigint AS cost
FROM usage_days WHERE user_id = $1 AND day BETWEEN $2 AND $3
GROUP BY day ORDER BY day
"""
_MONTH: Final = (
    "SELECT spent_micros, reserved_micros FROM budget_months WHERE user_id = $1 AND month = $2"
)
_DAY: Final = "SELECT spent_micros, reserved_micros FROM budget_days WHERE day = $1"


def _utc_day(at: datetime) -> date:
    if at.tzinfo is None:
        return at.date()
    return at.astimezone(UTC).date()


class PostgresBudgets:
    """The `BudgetStore` port over an asyncpg pool (the job-store's own)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield cast(Connection, conn)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc

    async def reserve(self, request: ReserveBudget) -> BudgetDecision:
        day = _utc_day(request.at)
        month = month_start(day)
        user = pg_text(request.user_id)
        decision: BudgetDecision | None = None
        try:
            async with self._pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                try:
                    decision = await self._reserve(
                        cast(Connection, conn), request, user, month, day
                    )
                except BaseException:
                    await transaction.rollback()
                    raise
                if decision.admitted:
                    await transaction.commit()
                else:
                    await transaction.rollback()  # the reservation inserted first goes too
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        return decision

    async def _reserve(
        self, conn: Connection, request: ReserveBudget, user: str, month: date, day: date
    ) -> BudgetDecision:
        amount = request.amount_micros
        if not await conn.fetchval(_RESERVE, request.job_id, user, month, day, amount):
            return ADMITTED  # its job is known, or a retry found its reservation
        record = await conn.fetchrow(_LOCK_MONTH, user, month)
        assert record is not None
        refused = refusal("user", amount, request.user_limit_micros, Totals(record[0], record[1]))
        if refused is not None:
            return refused
        if request.global_limit_micros is not None:
            record = await conn.fetchrow(_LOCK_DAY, day)
            assert record is not None
            refused = refusal(
                "global", amount, request.global_limit_micros, Totals(record[0], record[1])
            )
            if refused is not None:
                return refused
        # The day's sums move with every reservation, limit or not: its job's end takes it off.
        await conn.execute(_ADD, [user], [month], [day], [0], [amount])
        return ADMITTED

    async def release(self, job_id: uuid.UUID, user_id: str) -> bool:
        async with self._transaction() as conn:
            if await conn.fetchval(_LOCK_RESERVATION, job_id, pg_text(user_id)) is not None:
                await self._release(conn, [job_id])
            return bool(await conn.fetchval(_JOB_EXISTS, job_id))

    async def release_stale(self, older_than_s: float, limit: int) -> list[uuid.UUID]:
        async with self._transaction() as conn:
            locked = [r["job_id"] for r in await conn.fetch(_LOCK_STALE, older_than_s, limit)]
            if not locked:
                return []
            return await self._release(conn, locked)

    async def _release(self, conn: Connection, job_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        released = await conn.fetch(_RELEASE, list(job_ids))
        if released:
            await conn.execute(
                _ADD,
                [r["user_id"] for r in released],
                [r["month"] for r in released],
                [r["day"] for r in released],
                [0] * len(released),
                [-r["amount_micros"] for r in released],
            )
        return [r["job_id"] for r in released]

    async def usage(
        self, user_id: str, first: date, last: date
    ) -> tuple[dict[str, TypeUsage], dict[date, TypeUsage]]:
        user = pg_text(user_id)
        try:
            async with self._pool.acquire() as conn:
                by_type = await conn.fetch(_BY_TYPE, user, first, last)
                by_day = await conn.fetch(_BY_DAY, user, first, last)
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        return (
            {r["key"]: TypeUsage(jobs=r["jobs"], cost_micros=r["cost"]) for r in by_type},
            {r["key"]: TypeUsage(jobs=r["jobs"], cost_micros=r["cost"]) for r in by_day},
        )

    async def month(self, user_id: str, month: date) -> Totals:
        record = await self._pool.fetchrow(_MONTH, pg_text(user_id), month)
        return Totals(0, 0) if record is None else Totals(record[0], record[1])

    async def day(self, day: date) -> Totals:
        """Everyone's sums on `day` (tests, diagnostics)."""
        record = await self._pool.fetchrow(_DAY, day)
        return Totals(0, 0) if record is None else Totals(record[0], record[1])
