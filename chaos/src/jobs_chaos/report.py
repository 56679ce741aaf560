"""The table `make chaos` prints, and the JSON kept under chaos/results/ for the README."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jobs_chaos.audit import Row

COLUMNS = (
    ("scenario", 44),
    ("jobs", 5),
    ("refused", 8),
    ("lost", 5),
    ("beyond one", 11),
    ("left running", 13),
    ("stuck", 6),
    ("wrong status", 13),
    ("cancel lost", 16),
    ("broken stream", 15),
    ("longest to terminal", 20),
)


def table(rows: list[Row]) -> str:
    """One line per scenario; `refused` are requests the gateway did not admit (a `503` while
    NATS restarts), which the client knows to retry and which are not jobs; `cancel lost`, of
    the user cancels asked, those not honoured."""
    header = " ".join(name.ljust(width) for name, width in COLUMNS)
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = (
            r.scenario,
            r.jobs,
            r.refused,
            r.lost,
            r.beyond_one,
            r.left_running,
            r.stuck,
            r.wrong_status,
            f"{r.cancel_lost} (of {r.cancels})",
            f"{r.broken_stream} ({r.whole_stream} whole)",
            f"{r.longest_to_terminal_s:.1f} s",
        )
        lines.append(
            " ".join(str(c).ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip()
        )
    return "\n".join(lines)


def rollout_note(row: Row) -> str:
    """A line under the table for a scenario that stopped replicas or watched events: what
    the table's columns do not show."""
    parts = []
    if row.exits:
        codes = sorted({str(e.code) for e in row.exits})
        slowest = max(e.seconds for e in row.exits)
        budget = min(e.budget_s for e in row.exits)
        streams = sum(max(0, e.streams) for e in row.exits)
        parts.append(
            f"{len(row.exits)} replicas stopped holding {streams} streams, exit codes "
            f"{', '.join(codes)}, slowest exit {slowest:.1f} s of a {budget:.0f} s budget, "
            f"{row.bad_exits} not clean"
        )
    if row.watched:
        parts.append(
            f"{row.watched} SSE watchers, {row.missed_end} missed the end, "
            f"longest disconnected {row.longest_disconnected_s:.1f} s"
        )
    return f"({row.scenario}: " + "; ".join(parts) + ")"


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def write_json(
    directory: Path,
    size: str,
    rows: list[Row],
    details: list[dict[str, Any]],
    elapsed_s: float,
    stop_codes: dict[str, int | None],
) -> Path:
    now = dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"chaos-{size}-{now:%Y%m%dT%H%M%SZ}.json"
    body = {
        "date": now.isoformat(timespec="seconds"),
        "size": size,
        "machine": machine(),
        "elapsed_s": round(elapsed_s, 1),
        # Exit codes on SIGTERM at the end of the run: 0 is a clean shutdown.
        "stop_codes": stop_codes,
        "rows": [
            {**asdict(r), "clean": r.clean, "idle_replicas": r.idle_replicas, **{"details": d}}
            for r, d in zip(rows, details, strict=True)
        ],
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path
