"""Every benchmark scenario at its tiny size, so `make bench` is known to work; the figures
themselves are only reported, never asserted (the machine decides them)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from jobs_bench.context import TINY
from jobs_bench.profile import summarise
from jobs_bench.report import table, write
from jobs_bench.wrk import parse

from .conftest import TinyRun

pytestmark = pytest.mark.timeout(600)

PUSH_ROWS = ("push latency", "sse memory", "token latency")
CPU_TARGET_ROW = "services + NATS + Postgres (baseline: its process + Postgres)"


def test_every_other_scenario_runs_at_tiny_size(tiny_run: TinyRun, tmp_path: Path) -> None:
    # The push scenarios have a test of their own (test_bench_push.py).
    rows = [r for r in tiny_run.rows if r["scenario"] not in PUSH_ROWS]
    extras = tiny_run.extras

    by_figure = {(r["scenario"], r["figure"]): r for r in rows}
    assert {r["scenario"] for r in rows} == {
        "idle",
        "cpu per job",
        "end to end",
        "status reads",
        "admission",
        "burst",
        "memory",
    }
    assert by_figure[("idle", "services + NATS + Postgres, no jobs")]["value"] >= 0
    whole = by_figure[("cpu per job", CPU_TARGET_ROW)]
    assert whole["value"] > 0
    assert whole["baseline"] > 0
    assert whole["target"] == "<= 1.5x baseline"
    assert f"{{'succeeded': {TINY.cpu_jobs}}}" in whole["note"]  # the measured jobs, all succeeded
    for arm in ("system", "baseline"):
        # The generator's own CPU is measured, and counted only in the widest figure.
        assert by_figure[("cpu per job", f"load generator ({arm})")]["value"] > 0
    widest = by_figure[("cpu per job", "with the simulator and the load generator")]
    assert widest["value"] > by_figure[("cpu per job", "with the simulator")]["value"]

    sustainable = by_figure[("end to end", "highest sustainable rate")]
    assert sustainable["target"] == ">= 1.0x baseline"
    assert "system: 4/s" in sustainable["note"]
    assert "baseline: 4/s" in sustainable["note"]
    for arm in ("system", "baseline"):
        assert (
            by_figure[("end to end", f"load generator (wrk) at the last step, {arm}")]["value"] > 0
        )
    # A profile per service, or the reason py-spy gave none.
    services = extras["profiles"]["services"]
    assert set(services) == {"gateway", "ai-runner", "webhook-ingest", "job-store"}
    assert all("samples" in p or "error" in p for p in services.values())

    reads = TINY.read_users * TINY.read_jobs_per_user
    for figure in ("GET finished job", "GET running job", "revalidation answered 304"):
        read = by_figure[("status reads", f"{figure}, 64 connections")]
        assert read["value"] > 0, read
        assert read["baseline"] > 0, read
    running = by_figure[("status reads", "GET running job, 64 connections")]
    assert f"{reads} processing" in running["note"]
    # Every revalidation was answered 304: the ETag sent was the job's current one.
    revalidated = by_figure[("status reads", "revalidation answered 304, 64 connections")]
    assert re.search(r"statuses \{304: \d+\}", revalidated["note"]), revalidated
    admission = by_figure[("admission", "POST /api/jobs accepted, consumers paused")]
    assert admission["value"] > 0
    # Correctness, not speed: every burst job succeeded with exactly one prediction.
    assert by_figure[("burst", "time to drain (all succeeded)")]["met"] is True
    memory = [r for r in rows if r["scenario"] == "memory"]
    assert {r["figure"].split(" RSS")[0] for r in memory} >= {"gateway", "job-store"}
    assert all(r["value"] > 0 for r in memory)

    printed = table(rows)
    assert "highest sustainable rate" in printed
    json_path, png_path = write(rows, "tiny", tmp_path / "results", extras)
    document = json.loads(json_path.read_text())
    assert document["machine"]["cpus"] >= 1
    assert len(document["rows"]) == len(rows)
    assert set(document["profiles"]["services"]) == set(services)
    assert png_path.read_bytes().startswith(b"\x89PNG")


def test_profile_summary_counts_own_and_total_samples() -> None:
    raw = (
        "main (app.py:1);handle (app/http.py:10);encode (lib/json.py:5) 6\n"
        "main (app.py:1);handle (app/http.py:12) 4\n"
    )
    summary = summarise(raw)
    assert summary["samples"] == 10
    assert summary["byOwn"][0] == ["encode (lib/json.py)", 6, 6]
    # Lines of one function count together; the function's total holds its callees' samples.
    assert ["handle (app/http.py)", 4, 10] in summary["byOwn"]
    assert summary["byTotal"][0] in (["main (app.py)", 10], ["handle (app/http.py)", 10])


def test_wrk_output_is_read_by_status() -> None:
    result = parse(
        "Running 1s test\nBENCH_STATUSES 200=90 429=10\n"
        "BENCH_LATENCY_US p50=1500 p99=9000\nBENCH_TOTAL requests=100 duration_us=2000000\n"
    )
    assert result.per_s(200) == 45
    assert result.per_s(429) == 5
    assert result.other == 0
    assert math.isclose(result.p99_ms, 9.0)
