"""Every benchmark scenario at its tiny size, so `make bench` is known to work; the figures
themselves are only reported, never asserted (the machine decides them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from jobs_bench.__main__ import run
from jobs_bench.report import table, write
from jobs_bench.scenarios import SCENARIOS
from jobs_bench.wrk import parse

pytestmark = pytest.mark.timeout(600)

PUSH = ("push", "streams")


def test_every_other_scenario_runs_at_tiny_size(tmp_path: Path) -> None:
    # The push scenarios have a test of their own (test_bench_push.py).
    rows = run("tiny", [n for n in SCENARIOS if n not in PUSH], tmp_path / "results")

    by_figure = {(r["scenario"], r["figure"]): r for r in rows}
    assert {r["scenario"] for r in rows} == {
        "cpu per job",
        "end to end",
        "status reads",
        "admission",
        "burst",
        "memory",
    }
    whole = by_figure[("cpu per job", "whole system")]
    assert whole["value"] > 0
    assert whole["baseline"] > 0
    assert "{'succeeded': 30}" in whole["note"]  # the 30 measured jobs, all succeeded
    assert by_figure[("end to end", "jobs/s submitted to succeeded")]["value"] > 0
    assert by_figure[("status reads", "GET finished job, 64 connections")]["value"] > 0
    admission = by_figure[("admission", "POST /api/jobs accepted, consumers paused")]
    assert admission["value"] > 0
    # Correctness, not speed: every burst job succeeded with exactly one prediction.
    assert by_figure[("burst", "time to drain (all succeeded)")]["met"] is True
    memory = [r for r in rows if r["scenario"] == "memory"]
    assert {r["figure"].split(" RSS")[0] for r in memory} >= {"gateway", "job-store"}
    assert all(r["value"] > 0 for r in memory)

    printed = table(rows)
    assert "whole system" in printed
    json_path, png_path = write(rows, "tiny", tmp_path / "results")
    document = json.loads(json_path.read_text())
    assert document["machine"]["cpus"] >= 1
    assert len(document["rows"]) == len(rows)
    assert png_path.read_bytes().startswith(b"\x89PNG")


def test_wrk_output_is_read_by_status() -> None:
    result = parse(
        "Running 1s test\nBENCH_STATUSES 200=90 429=10\n"
        "BENCH_LATENCY_US p50=1500 p99=9000\nBENCH_TOTAL requests=100 duration_us=2000000\n"
    )
    assert result.per_s(200) == 45
    assert result.per_s(429) == 5
    assert result.other == 0
    assert math.isclose(result.p99_ms, 9.0)
