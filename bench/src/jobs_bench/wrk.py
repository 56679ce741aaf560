"""Runs wrk (HTTP load from a separate process) and reads its answers by status and latency."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).parent / "lua" / "request.lua"


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: answers by status, and latency percentiles over every answer."""

    statuses: dict[int, int]
    duration_s: float
    p50_ms: float
    p99_ms: float

    def per_s(self, *codes: int) -> float:
        """Answers per second with one of `codes` (2xx when none are named)."""
        wanted = [c for c in self.statuses if (c in codes if codes else 200 <= c < 300)]
        return sum(self.statuses[c] for c in wanted) / self.duration_s

    @property
    def other(self) -> int:
        """Answers that are neither 2xx nor 304 nor 429."""
        return sum(n for c, n in self.statuses.items() if not (200 <= c < 300 or c in (304, 429)))


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int = 64,
    threads: int = 2,
    method: str = "GET",
    body: str = "",
    token: str = "",
) -> WrkResult:
    env = {**os.environ, "BENCH_METHOD": method, "BENCH_BODY": body, "BENCH_TOKEN": token}
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(SCRIPT),
        url,
    ]
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=duration_s + 60
    ).stdout
    return parse(out)


def parse(out: str) -> WrkResult:
    statuses_line = re.search(r"^BENCH_STATUSES(.*)$", out, re.M)
    latency = re.search(r"^BENCH_LATENCY_US p50=(\d+) p99=(\d+)$", out, re.M)
    total = re.search(r"^BENCH_TOTAL requests=(\d+) duration_us=(\d+)$", out, re.M)
    if statuses_line is None or latency is None or total is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    statuses = {
        int(code): int(count)
        for code, count in (pair.split("=") for pair in statuses_line[1].split())
    }
    return WrkResult(
        statuses=statuses,
        duration_s=int(total[2]) / 1e6,
        p50_ms=int(latency[1]) / 1000,
        p99_ms=int(latency[2]) / 1000,
    )
