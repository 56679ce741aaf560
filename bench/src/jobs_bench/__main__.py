"""`make bench`: runs the scenarios at the chosen size on throwaway servers and reports them.

`python -m jobs_bench [--size full|tiny] [--only cpu,reads,...] [--results DIR]`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jobs_bench.context import SIZES, Context, Row
from jobs_bench.profile import describe
from jobs_bench.report import table, write
from jobs_bench.scenarios import SCENARIOS, SPOILS_SHARED
from jobs_bench.systems import Servers
from jobs_bench.wrk import wrk_available


def run(
    size: str, only: list[str], results: Path, extras: dict[str, Any] | None = None
) -> list[Row]:
    """The rows of the chosen scenarios; what the report carries besides rows (the profiles)
    lands in `extras`."""
    rows: list[Row] = []
    chosen = SIZES[size]
    if chosen.shared:
        only = sorted(only, key=lambda name: name in SPOILS_SHARED)
    with tempfile.TemporaryDirectory(prefix="jobs-bench-") as tmp:
        work = Path(tmp)
        with Servers(work) as servers:
            context = Context(servers=servers, work=work, size=chosen)
            if extras is not None:
                context.extras = extras
            try:
                for name in only:
                    print(f"== {name}", file=sys.stderr, flush=True)
                    began = time.monotonic()
                    rows += SCENARIOS[name](context)
                    # What each scenario costs of the run's time, for whoever sizes them.
                    took = time.monotonic() - began
                    print(f"   {name} took {took:.0f} s", file=sys.stderr, flush=True)
            finally:
                context.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs_bench")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    if not wrk_available():
        print("make bench: wrk is missing (apt-get install wrk)", file=sys.stderr)
        return 2
    extras: dict[str, Any] = {}
    started = time.monotonic()
    rows = run(args.size, only, args.results, extras)
    extras["durationS"] = round(time.monotonic() - started)
    print(table(rows))
    if "profiles" in extras:
        profiles = extras["profiles"]
        print(f"\nat {profiles['rate']:g} jobs/s offered ({profiles['step']})")
        print(describe(profiles["services"]))
    json_path, png_path = write(rows, args.size, args.results, extras)
    print(f"\nwritten: {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
