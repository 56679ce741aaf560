"""`python -m jobs_chaos --size full|short`: starts the two-replica system in a temporary
directory, runs every scenario, prints the table and writes the JSON; exit 1 on a violation."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from jobs_chaos.audit import Row
from jobs_chaos.cluster import CLUSTER_SCENARIOS
from jobs_chaos.report import table
from jobs_chaos.rollout import ROLLOUT_SCENARIOS
from jobs_chaos.run import RESULTS_DIR, run_grouped
from jobs_chaos.scenarios import SCENARIOS, SIZES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs_chaos", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--only", action="append", default=[], help="run scenarios whose name contains this"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    chosen = [
        s
        for s in (*SCENARIOS, *ROLLOUT_SCENARIOS, *CLUSTER_SCENARIOS)
        if not args.only or any(o in s.name for o in args.only)
    ]
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))

    def progress(row: Row) -> None:
        print(f"done: {table([row]).splitlines()[-1]}", file=sys.stderr, flush=True)

    outcome = asyncio.run(
        run_grouped(workdir, SIZES[args.size], chosen, keep=args.keep, progress=progress)
    )
    print(outcome.table)
    path = outcome.write(args.results, time.monotonic() - started)
    print(f"\n{len(outcome.rows)} scenarios in {time.monotonic() - started:.0f} s; {path}")
    if args.keep:
        print(f"logs and data kept in {workdir}")
    for line in outcome.problems():
        print(line, file=sys.stderr)
    return 0 if outcome.clean else 1


if __name__ == "__main__":
    sys.exit(main())
