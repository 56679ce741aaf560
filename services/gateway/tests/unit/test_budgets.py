"""Budgets at admission over fake ports: which limits apply (the token's claim over
`USER_BUDGET_USD`, the day's), the reservation of the type's `maxCostUsd` made before the job
is published and carried in it, the refusal that publishes nothing, the release of a job
never published (and only then), and no request at all when no budget applies."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.budgets import MAX_BUDGET_USD, BudgetExceeded, Spending, budget_claim_micros
from gateway.handlers import (
    Admitted,
    Dependencies,
    NewJob,
    Refused,
    SubmitJob,
    submit_job,
)
from jobs_proto.events import JobRequested
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.spend import ReleaseBudget, ReserveBudget, usd_to_micros
from jobs_runtime.errors import Unavailable

from ..fakes import FakeBudgets, FakeIdempotencyKeys, FakeJobsStream, FakeJobStore, ManualClock

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
JOB = NewJob(job_type="title_generation", input={"topic": "tides"})
# `title_generation`'s most: $0.02.
MAX_COST = usd_to_micros(JOB_TYPES["title_generation"].max_cost_usd)


def deps(
    budgets: FakeBudgets,
    stream: FakeJobsStream | None = None,
    *,
    user_usd: str | None = None,
    global_usd: str | None = None,
    keys: FakeIdempotencyKeys | None = None,
) -> Dependencies:
    stream = stream if stream is not None else FakeJobsStream()
    spending = Spending(
        budgets,
        user_micros=None if user_usd is None else usd_to_micros(Decimal(user_usd)),
        global_micros=None if global_usd is None else usd_to_micros(Decimal(global_usd)),
    )
    ids = iter(uuid.UUID(int=n) for n in range(1, 10_000))
    return Dependencies(
        bus=stream,
        store=FakeJobStore(consumes=stream),
        requested=stream,
        clock=ManualClock(AT),
        keys=keys,
        spending=spending,
        new_id=lambda: next(ids),
    )


@pytest.mark.parametrize(
    ("claim", "micros"),
    [(0, 0), (5, 5_000_000), (0.25, 250_000), (1e30, MAX_BUDGET_USD * 1_000_000)],
)
def test_a_claim_that_is_a_non_negative_number_is_a_budget(claim: float, micros: int) -> None:
    assert budget_claim_micros(claim) == micros


@pytest.mark.parametrize("claim", ["5", True, None, -1, float("nan"), float("inf"), [5], {}])
def test_any_other_claim_is_not(claim: object) -> None:
    with pytest.raises(ValueError, match=r"not a|negative"):
        budget_claim_micros(claim)


async def test_without_a_budget_nothing_is_asked_and_nothing_reserved() -> None:
    budgets, stream = FakeBudgets(), FakeJobsStream()
    outcome = await submit_job(SubmitJob("alice", JOB), deps(budgets, stream))
    assert isinstance(outcome, Admitted)
    assert budgets.asked == []
    [event] = stream.published
    assert isinstance(event, JobRequested)
    assert (event.price, event.reserved_micros) == (JOB_TYPES["title_generation"].price, 0)


async def test_admission_reserves_the_types_most_before_publishing() -> None:
    budgets, stream = FakeBudgets(), FakeJobsStream()
    outcome = await submit_job(
        SubmitJob("alice", JOB), deps(budgets, stream, user_usd="1", global_usd="100")
    )
    assert isinstance(outcome, Admitted)
    job_id = outcome.accepted.job_id
    assert budgets.asked == [
        ReserveBudget(
            job_id=job_id,
            user_id="alice",
            job_type="title_generation",
            amount_micros=MAX_COST,
            at=AT,
            user_limit_micros=1_000_000,
            global_limit_micros=100_000_000,
        )
    ]
    [event] = stream.published
    assert isinstance(event, JobRequested)
    # The job counts in the periods of the moment it was admitted, as its event says.
    assert (event.job_id, event.occurred_at, event.reserved_micros) == (job_id, AT, MAX_COST)


async def test_the_tokens_claim_overrides_the_configured_budget() -> None:
    budgets = FakeBudgets()
    handlers_deps = deps(budgets, user_usd="1")
    await submit_job(SubmitJob("alice", JOB, budget_micros=3_000_000), handlers_deps)
    await submit_job(SubmitJob("bob", JOB), handlers_deps)
    assert [(r.user_id, r.user_limit_micros) for r in budgets.asked] == [
        ("alice", 3_000_000),
        ("bob", 1_000_000),
    ]
    # A claim alone is a budget where none is configured.
    only_claim = FakeBudgets()
    await submit_job(SubmitJob("carol", JOB, budget_micros=0), deps(only_claim))
    assert [r.user_limit_micros for r in only_claim.asked] == [0]


async def test_a_job_past_the_users_budget_is_refused_and_not_published() -> None:
    budgets, stream = FakeBudgets(), FakeJobsStream()
    # $0.05 fits two jobs of $0.02, not a third.
    handlers_deps = deps(budgets, stream, user_usd="0.05")
    outcomes = [await submit_job(SubmitJob("alice", JOB), handlers_deps) for _ in range(3)]
    assert [type(o) for o in outcomes] == [Admitted, Admitted, Refused]
    refused = outcomes[2]
    assert isinstance(refused, Refused)
    assert isinstance(refused.reason, BudgetExceeded)
    assert (refused.reason.scope, refused.reason.limit_micros) == ("user", 50_000)
    assert refused.reason.remaining_micros == 10_000
    assert "$0.02" in str(refused.reason)
    assert "$0.01" in str(refused.reason)
    assert len(stream.published) == 2
    # Another user has a month of their own.
    assert isinstance(await submit_job(SubmitJob("bob", JOB), handlers_deps), Admitted)


async def test_the_days_budget_holds_every_user_together() -> None:
    budgets = FakeBudgets()
    handlers_deps = deps(budgets, global_usd="0.04")
    users = ["alice", "bob", "carol"]
    outcomes = [await submit_job(SubmitJob(u, JOB), handlers_deps) for u in users]
    assert [type(o) for o in outcomes] == [Admitted, Admitted, Refused]
    refused = outcomes[2]
    assert isinstance(refused, Refused)
    assert isinstance(refused.reason, BudgetExceeded)
    assert (refused.reason.scope, refused.reason.remaining_micros) == ("global", 0)


async def test_the_job_store_away_is_unavailable_and_nothing_is_published() -> None:
    budgets, stream = FakeBudgets(down=True), FakeJobsStream()
    outcome = await submit_job(SubmitJob("alice", JOB), deps(budgets, stream, user_usd="1"))
    assert isinstance(outcome, Refused)
    assert isinstance(outcome.reason, Unavailable)
    assert stream.published == []


async def test_a_failed_publish_of_unknown_outcome_keeps_its_reservation() -> None:
    budgets, stream = FakeBudgets(), FakeJobsStream(down=True)
    outcome = await submit_job(SubmitJob("alice", JOB), deps(budgets, stream, user_usd="1"))
    assert isinstance(outcome, Refused)
    assert isinstance(outcome.reason, Unavailable)
    # The stream is down for reads too: whether the job was stored is unknown, so the
    # reservation stays for the job-store's reconciliation.
    assert budgets.released == []
    assert len(budgets.reservations) == 1


async def test_a_publish_that_stored_nothing_is_released_one_that_did_is_kept() -> None:
    class Refusing(FakeJobsStream):
        """Refuses publishes (nothing stored), answers reads."""

        async def publish(self, event: object) -> None:
            raise Unavailable("JetStream refused")

    budgets, refusing = FakeBudgets(), Refusing()
    outcome = await submit_job(SubmitJob("alice", JOB), deps(budgets, refusing, user_usd="1"))
    assert isinstance(outcome, Refused)
    [reserved] = budgets.asked
    assert budgets.released == [ReleaseBudget(job_id=reserved.job_id, user_id="alice")]
    assert budgets.reservations == {}

    # Stored, but the acknowledgement lost: the job exists, its reservation must stay.
    budgets, ambiguous = FakeBudgets(), FakeJobsStream(ambiguous=True)
    outcome = await submit_job(SubmitJob("alice", JOB), deps(budgets, ambiguous, user_usd="1"))
    assert isinstance(outcome, Refused)
    assert budgets.released == []
    assert len(budgets.reservations) == 1


async def test_a_replay_of_an_admitted_job_is_not_refused_for_its_budget() -> None:
    budgets, stream, keys = FakeBudgets(), FakeJobsStream(), FakeIdempotencyKeys()
    # Room for exactly one job.
    handlers_deps = deps(budgets, stream, user_usd="0.02", keys=keys)
    first = await submit_job(SubmitJob("alice", JOB, "key-1", "body"), handlers_deps)
    again = await submit_job(SubmitJob("alice", JOB, "key-1", "body"), handlers_deps)
    other = await submit_job(SubmitJob("alice", JOB, "key-2", "body"), handlers_deps)
    assert isinstance(first, Admitted)
    assert isinstance(again, Admitted)
    assert again.replayed
    assert again.accepted == first.accepted
    assert isinstance(other, Refused)
    assert isinstance(other.reason, BudgetExceeded)
    assert len(budgets.asked) == 2  # the replay asked nothing
    assert len(stream.published) == 1


async def test_a_keyed_job_refused_for_its_budget_may_be_retried_once_room_is_made() -> None:
    budgets, stream, keys = FakeBudgets(), FakeJobsStream(), FakeIdempotencyKeys()
    handlers_deps = deps(budgets, stream, user_usd="0.02", keys=keys)
    budgets.spent["alice"] = 10_000  # $0.01 already spent this month
    refused = await submit_job(SubmitJob("alice", JOB, "key-1", "body"), handlers_deps)
    assert isinstance(refused, Refused)
    assert isinstance(refused.reason, BudgetExceeded)
    budgets.spent["alice"] = 0
    # The refusal was not kept as the key's answer.
    admitted = await submit_job(SubmitJob("alice", JOB, "key-1", "body"), handlers_deps)
    assert isinstance(admitted, Admitted)
    assert not admitted.replayed
    assert len(stream.published) == 1
