"""Runs wrk (HTTP load from a separate process, paced or as fast as answered, over one URL or a
rotating list of paths and tokens) and reads its answers by status and latency, and its CPU."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

SCRIPT = Path(__file__).parent / "lua" / "request.lua"


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: answers by status, and latency percentiles over every answer."""

    statuses: dict[int, int]
    duration_s: float
    p50_ms: float
    p99_ms: float
    # wrk's own CPU seconds: what the load generator cost, reported apart from the system's.
    cpu_s: float = 0.0

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
    requests: Path | None = None,
    rate: float = 0.0,
) -> WrkResult:
    """`requests`: a file of `path<TAB>token<TAB>etag` lines to rotate over (see request.lua);
    `rate`: requests per second offered, 0 for as fast as the server answers."""
    env = {
        **os.environ,
        "BENCH_METHOD": method,
        "BENCH_BODY": body,
        "BENCH_TOKEN": token,
        "BENCH_REQUESTS": "" if requests is None else str(requests),
        "BENCH_RATE": str(rate),
        "BENCH_THREADS": str(threads),
    }
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
    before = _children_cpu_s()
    out = subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=duration_s + 60
    ).stdout
    result = parse(out)
    # wrk was the only child reaped meanwhile: the children's CPU grew by exactly its own.
    return replace(result, cpu_s=_children_cpu_s() - before)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
