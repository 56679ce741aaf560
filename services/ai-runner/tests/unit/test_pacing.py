"""How the `requested` consumer is paced by the shared limits (no I/O): far from them a capacity
read serves several fetches, near them every fetch reads again."""

from ai_runner.pacing import MAX_PAUSE_S, REUSE_S, paced_by
from ai_runner.ports import Capacity, LimitWait
from jobs_runtime.pacing import Allowance

from ..fakes import FakeCapacity, Ticks, Waits


async def test_far_from_the_limits_one_read_serves_fetches_until_a_batch_could_come_near() -> None:
    capacity, clock = FakeCapacity([Capacity(300, None)]), Ticks()
    pace = paced_by(capacity, Waits(), batch=64, clock=clock)
    # 300 free: granted in full; then 236 and 172 left as if each fetch took a whole batch;
    # 108 is still past the margin; 44 is not, so the fifth fetch reads again.
    allowances = [await pace() for _ in range(5)]
    assert [a.count for a in allowances] == [300, 236, 172, 108, 300]
    assert capacity.reads == 2


async def test_a_read_is_reused_for_a_second_at_most() -> None:
    capacity, clock = FakeCapacity([Capacity(10_000, None)]), Ticks()
    pace = paced_by(capacity, Waits(), clock=clock)
    await pace()
    await pace()
    assert capacity.reads == 1
    clock.now += REUSE_S
    await pace()
    assert capacity.reads == 2


async def test_near_a_limit_every_fetch_reads_again() -> None:
    capacity = FakeCapacity([Capacity(50, None)])
    pace = paced_by(capacity, Waits(), clock=Ticks())
    assert [(await pace()).count for _ in range(3)] == [50, 50, 50]
    assert capacity.reads == 3


async def test_a_full_limit_holds_fetching_back_and_is_read_again_next_time() -> None:
    full = Capacity(0, LimitWait("in_flight", 5.0))
    capacity, waits = FakeCapacity([Capacity(500, None), full, Capacity(500, None)]), Waits()
    clock = Ticks()
    pace = paced_by(capacity, waits, clock=clock)
    assert (await pace()).count == 500
    clock.now += REUSE_S
    assert await pace() == Allowance(0, MAX_PAUSE_S)
    assert waits.limits == ["in_flight"]
    assert (await pace()).count == 500
    assert capacity.reads == 3
