"""One chaos run: the system started once, every chosen scenario on it in turn (knobs reset
and every replica revived between them), and the outcome with its table."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs_chaos.audit import Row
from jobs_chaos.report import rollout_note, table, write_json
from jobs_chaos.scenarios import Injected, Scenario, Size, inject, settle
from jobs_chaos.system import ChaosSystem

RESULTS_DIR = Path(__file__).resolve().parents[2] / "results"


@dataclass
class Outcome:
    size: Size
    rows: list[Row] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    stop_codes: dict[str, int | None] = field(default_factory=dict)
    workdir: Path | None = None
    # Operations the NATS server refused to a service's user: each must have had every
    # permission it used, through every fault.
    nats_refusals: list[str] = field(default_factory=list)

    @property
    def table(self) -> str:
        text = table(self.rows)
        overlapped = [
            r.scenario for r, d in zip(self.rows, self.details, strict=True) if d.get("overlapped")
        ]
        if overlapped:
            text += "\n(audited while the scenarios after it ran: " + ", ".join(overlapped) + ")"
        for row in self.rows:
            if row.exits or row.watched:
                text += "\n" + rollout_note(row)
        return text

    @property
    def work_by_replica(self) -> dict[str, float]:
        """What each replica did over the whole run, from the per-scenario metric deltas."""
        totals: dict[str, float] = {}
        for row in self.rows:
            for by_replica in row.shares.values():
                for name, n in by_replica.items():
                    totals[name] = totals.get(name, 0.0) + n
        return totals

    @property
    def idle_replicas(self) -> list[str]:
        return sorted(name for name, n in self.work_by_replica.items() if n <= 0)

    @property
    def clean(self) -> bool:
        return all(r.clean for r in self.rows) and not self.idle_replicas

    def problems(self) -> list[str]:
        lines = []
        for row, details in zip(self.rows, self.details, strict=True):
            for v in details["violations"]:
                lines.append(f"[{row.scenario}] {v['kind']} job {v['job_id']}: {v['detail']}")
            if not details["quiet"]:
                lines.append(f"[{row.scenario}] no quiet within {self.size.quiet_timeout_s} s")
        unclean = {name: code for name, code in self.stop_codes.items() if code not in (0, None)}
        if unclean:
            lines.append(f"exit codes on SIGTERM at the end, not 0: {unclean}")
        if self.idle_replicas:
            lines.append(f"replicas that did no work in the whole run: {self.idle_replicas}")
        lines += [f"NATS refused: {line}" for line in self.nats_refusals]
        return lines

    def write(self, directory: Path, elapsed_s: float) -> Path:
        return write_json(
            directory, self.size.name, self.rows, self.details, elapsed_s, self.stop_codes
        )


async def run_all(
    workdir: Path,
    size: Size,
    scenarios: list[Scenario],
    *,
    keep: bool = False,
    progress: Callable[[Row], None] | None = None,
    nodes: int = 1,
) -> Outcome:
    outcome = Outcome(size, workdir=workdir)
    system = ChaosSystem(workdir, nodes=nodes)
    try:
        await asyncio.to_thread(system.start)
        token = await asyncio.to_thread(system.dev_token)
        # The slow ones first, so that their wait overlaps as many others as possible.
        overlapped = [s for s in scenarios if size.overlap_slow and s.slow]
        results: dict[str, tuple[Row, dict[str, Any]]] = {}
        waiting = []

        async def finish(scenario: Scenario, injected: Injected) -> None:
            row, details = await settle(system, scenario, size, token, injected)
            details["work_by_replica"] = row.shares
            details["overlapped"] = scenario in overlapped
            results[scenario.name] = (row, details)
            if progress is not None:
                progress(row)

        for scenario in [*overlapped, *(s for s in scenarios if s not in overlapped)]:
            injected = await inject(system, scenario, size, token)
            if scenario in overlapped:
                waiting.append(asyncio.create_task(finish(scenario, injected)))
            else:
                await finish(scenario, injected)
        await asyncio.gather(*waiting)
        for scenario in scenarios:
            row, details = results[scenario.name]
            outcome.rows.append(row)
            outcome.details.append(details)
    finally:
        outcome.stop_codes = await asyncio.to_thread(system.stop)
        if hasattr(system, "nats"):
            outcome.nats_refusals = system.nats.violations()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return outcome


async def run_grouped(
    workdir: Path,
    size: Size,
    scenarios: list[Scenario],
    *,
    keep: bool = False,
    progress: Callable[[Row], None] | None = None,
) -> Outcome:
    """`run_all` once per system the scenarios need (one NATS server, then the cluster's), in
    one outcome: the cluster's stop codes and refusals are named `cluster/...`."""
    outcome = Outcome(size, workdir=workdir)
    for nodes in sorted({s.nodes for s in scenarios}):
        group = [s for s in scenarios if s.nodes == nodes]
        name = "" if nodes == 1 else "cluster/"
        part = await run_all(
            workdir / f"nodes-{nodes}", size, group, keep=keep, progress=progress, nodes=nodes
        )
        outcome.rows += part.rows
        outcome.details += part.details
        outcome.stop_codes |= {f"{name}{k}": v for k, v in part.stop_codes.items()}
        outcome.nats_refusals += [f"{name}{line}" for line in part.nats_refusals]
    return outcome
