"""Bounded memory: data removed an hour after a prediction ends, the record forgotten after two."""

from jobs_testkit.waiting import eventually
from replicate_sim.engine import Simulator

from .conftest import settings

RETENTION_S = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def create(sim: Simulator, job: str | None = None) -> str:
    webhook = f"http://127.0.0.1:9/hook?job={job}" if job else None
    prediction = sim.create(
        model="google/gemini-3-pro",
        version="hidden",
        model_input={"prompt": "tides"},
        webhook=webhook,
        events=["completed"],
        cancel_after_s=None,
        base_url="http://sim",
    )
    return prediction.id


async def test_tens_of_thousands_of_predictions_leave_nothing_behind() -> None:
    clock = Clock()
    sim = Simulator(settings(), clock=clock)
    sim.configure({"latencyS": 0})
    ids = [create(sim) for _ in range(20_000)]
    await eventually(lambda: sim.running == 0)  # the end timers fired
    assert sim.size == 20_000

    clock.now += RETENTION_S + 1
    sim.sweep()
    body = sim.show(sim.get(ids[0]))  # type: ignore[arg-type]
    assert body["data_removed"] is True
    assert body["output"] is None
    assert body["input"] == {}
    assert body["status"] == "succeeded"

    clock.now += RETENTION_S
    sim.sweep()
    assert sim.size == 0
    assert sim.get(ids[-1]) is None
    assert sim.page(None).results == []
    # Every index and timer table is empty again, not just the main one.
    assert not sim._timers
    assert not sim._finished
    assert not sim._by_job
    assert not sim._by_seq
    assert len(sim._order) < 2048


async def test_running_predictions_are_kept_and_the_audit_forgets_with_them() -> None:
    clock = Clock()
    sim = Simulator(settings(), clock=clock)
    sim.configure({"latencyS": 0})
    done = create(sim, job="j-done")
    sim.configure({"latencyS": 3 * RETENTION_S})
    running = create(sim, job="j-running")
    await eventually(lambda: sim.running == 1)  # the first one's end timer fired

    clock.now += 2 * RETENTION_S + 1
    sim.sweep()
    assert sim.get(done) is None
    assert sim.audit("j-done") == []
    kept = sim.get(running)
    assert kept is not None
    assert sim.show(kept)["status"] == "processing"
    assert [p["id"] for p in sim.audit("j-running")] == [running]
    await sim.stop()
