"""What every scenario shares: the run's size, the systems it may borrow, the figures one
scenario hands to a later one, a row of the table, and the Python job generator's process."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs_bench.systems import (
    Baseline,
    EventDrivenSystem,
    Servers,
    bare_endpoint,
    reset_simulator,
    set_simulator,
)

Row = dict[str, Any]


@dataclass(frozen=True)
class Size:
    """How big each scenario runs: `full` is the issue's, `tiny` proves it works in `make test`.

    `shared`: the scenarios borrow one running system, baseline and bare endpoint instead of
    starting their own; start-ups are most of a tiny run, and a tiny run's figures are only
    proof that the scenario works, while a full run measures each system fresh."""

    name: str
    # How long each simulated prediction streams its output (a `start`, an `output` webhook
    # every 500 ms, then `completed`), in every throughput scenario and in both arms.
    job_s: float
    idle_s: float
    cpu_jobs: int
    cpu_rate: float
    # The end-to-end search: offered jobs/s, each step this long, stopping at the first step
    # the arm cannot sustain; then one step at the found rate while py-spy samples.
    steps: tuple[float, ...]
    step_s: float
    profile_s: float
    http_s: float
    # Reads rotate over this many users, each with this many jobs.
    read_users: int
    read_jobs_per_user: int
    burst_jobs: int
    in_flight: tuple[int, int]
    # Push latency runs at half the sustainable rate the `e2e` scenario found in the same
    # invocation, or at half of this when it did not run.
    fallback_rate: float
    shared: bool = False


FULL = Size(
    "full",
    job_s=3.0,
    idle_s=20.0,
    cpu_jobs=1200,
    cpu_rate=30.0,
    # Finer where a 2-core machine lands (10-30 jobs/s with 3 s jobs), coarser above.
    steps=(5, 7.5, 10, 12.5, 15, 17.5, 20, 25, 30, 35, 40, 50, 60, 80, 100, 130, 160),
    step_s=15.0,
    profile_s=15.0,
    http_s=15.0,
    read_users=16,
    read_jobs_per_user=32,
    burst_jobs=3_000,
    in_flight=(1_000, 5_000),
    fallback_rate=40.0,
)
TINY = Size(
    "tiny",
    job_s=1.2,
    idle_s=2.0,
    cpu_jobs=20,
    cpu_rate=10.0,
    steps=(4.0, 8.0),
    step_s=2.0,
    profile_s=2.0,
    http_s=1.0,
    read_users=2,
    read_jobs_per_user=3,
    burst_jobs=60,
    in_flight=(10, 40),
    fallback_rate=10.0,
    shared=True,
)
SIZES = {s.name: s for s in (FULL, TINY)}


@dataclass
class Context:
    servers: Servers
    work: Path
    size: Size
    # Figures a later scenario builds on (the sustainable rate), and what the JSON report
    # carries besides rows (the profiles).
    measured: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    _kept: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _lent: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        self._kept.close()

    def _lend(self, name: str, start: Callable[[], Any]) -> Any:
        if name not in self._lent:
            self._lent[name] = self._kept.enter_context(start())
        return self._lent[name]

    @contextlib.contextmanager
    def event_driven(self) -> Iterator[EventDrivenSystem]:
        """The system under test, its predictions streaming for `job_s`: a fresh one, or the
        run's shared one with its simulator reset."""
        if not self.size.shared:
            with EventDrivenSystem(self.servers, self.work) as fresh:
                set_simulator(fresh.simulator_url, latencyS=self.size.job_s)
                yield fresh
            return
        system = self._lend("event-driven", lambda: EventDrivenSystem(self.servers, self.work))
        reset_simulator(system.simulator_url, self.size.job_s)
        yield system

    @contextlib.contextmanager
    def baseline(self) -> Iterator[Baseline]:
        if not self.size.shared:
            with Baseline(self.servers, self.work) as fresh:
                set_simulator(fresh.simulator_url, latencyS=self.size.job_s)
                yield fresh
            return
        system = self._lend("baseline", lambda: Baseline(self.servers, self.work))
        reset_simulator(system.simulator_url, self.size.job_s)
        yield system

    @contextlib.contextmanager
    def bare(self) -> Iterator[tuple[str, int]]:
        if not self.size.shared:
            with bare_endpoint(self.work) as fresh:
                yield fresh
            return
        yield self._lend("bare", lambda: bare_endpoint(self.work))


def row(
    scenario: str,
    figure: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> Row:
    ratio = None if not baseline else value / baseline
    return {
        "scenario": scenario,
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def submit(url: str, token: str, count: int, rate: float) -> dict[str, Any]:
    """Jobs from the generator process; what it accepted, what it was answered, and its own
    CPU seconds (`cpuS`), reported apart from the system's."""
    out = subprocess.run(
        [sys.executable, "-m", "jobs_bench.load", url, token, str(count), str(rate)],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    ).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result
