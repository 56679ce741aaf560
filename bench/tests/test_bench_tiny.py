"""Every benchmark scenario at its tiny size, so `make bench` is known to work; the figures
themselves are only reported, never asserted (the machine decides them). One module, so that
the suite's workers share one tiny run (a session fixture runs once per worker)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from jobs_bench.context import TINY
from jobs_bench.profile import summarise
from jobs_bench.push import TINY_PUSH, percentile, sign
from jobs_bench.report import table, write
from jobs_bench.tokens import TOKEN_SIZES, Reading, token_latencies_ms, tokens_between
from jobs_bench.wrk import parse

from .conftest import TinyRun

pytestmark = pytest.mark.timeout(600)

PUSH_ROWS = ("push latency", "sse memory", "token latency")
REPLICAS_RATE_ROW = "highest sustainable rate, R3 on 3 nodes (baseline: R1 on 1)"
CPU_TARGET_ROW = "services + NATS + Postgres (baseline: its process + Postgres)"


def test_every_other_scenario_runs_at_tiny_size(tiny_run: TinyRun, tmp_path: Path) -> None:
    # The push scenarios have a test of their own (below).
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
        "replicas",
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

    # R3 on the three-node cluster against R1 on one server, both measured in this run.
    r3_cpu = by_figure[("replicas", "CPU per job, services + NATS + Postgres, R3 (baseline: R1)")]
    assert r3_cpu["value"] > 0
    assert r3_cpu["baseline"] > 0
    assert f"{{'succeeded': {TINY.cpu_jobs}}}" in r3_cpu["note"]
    assert "R3: 4/s" in by_figure[("replicas", REPLICAS_RATE_ROW)]["note"]

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


def _positive(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_push_and_streams_run_at_tiny_size(tiny_run: TinyRun) -> None:
    rows = [r for r in tiny_run.rows if r["scenario"] in ("push latency", "sse memory")]

    by_figure = {(r["scenario"], r["figure"]): r for r in rows}
    assert {r["scenario"] for r in rows} == {"push latency", "sse memory"}
    for figure in ("webhook to SSE event, p50", "webhook to SSE event, p99"):
        sse = by_figure[("push latency", figure)]
        assert _positive(sse["value"]), sse
        # Its baseline is the polling client on the same jobs.
        assert _positive(sse["baseline"]), sse
        assert _positive(sse["ratio"]), sse
    p99 = by_figure[("push latency", "webhook to SSE event, p99")]
    assert p99["target"] == "p99 < 25 ms"
    # Met exactly when the measured p99 is under the target the row names (no job failed, as
    # the note says): the figure itself is the machine's, the verdict must follow from it.
    assert p99["met"] is (p99["value"] < 25.0), p99
    assert f"{TINY_PUSH.samples} jobs measured" in p99["note"]
    assert "failed" not in p99["note"]
    for figure in ("p50", "p99"):
        polled = by_figure[("push latency", f"webhook to polling client (every 2 s), {figure}")]
        assert _positive(polled["value"]), polled

    holding = by_figure[("sse memory", f"gateway RSS holding {TINY_PUSH.streams} streams")]
    assert _positive(holding["value"])
    assert _positive(holding["baseline"])
    assert holding["target"] == "< 250 MiB"
    assert holding["met"] is (holding["value"] < 250.0), holding
    # Every stream the scenario opened was counted open by the gateway itself.
    assert f"the gateway counts {TINY_PUSH.streams} open" in holding["note"]
    assert _positive(by_figure[("sse memory", "gateway RSS, no stream open")]["value"])
    per_job = TINY_PUSH.streams // TINY_PUSH.stream_jobs
    fanout = by_figure[("sse memory", f"a result to all {per_job} listeners of its job, median")]
    assert _positive(fanout["value"])


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 51.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


def test_webhook_signature_matches_a_standard_webhooks_vector() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_tokens_run_at_tiny_size(tiny_run: TinyRun) -> None:
    by_figure = {r["figure"]: r for r in tiny_run.rows if r["scenario"] == "token latency"}
    jobs = TOKEN_SIZES["tiny"].jobs
    p99 = by_figure["simulator writes a token -> /output client, p99"]
    assert _positive(p99["value"]), p99
    assert p99["met"] is (p99["value"] < 50.0), p99
    # Every client's text from offset 0 is the job's output, exactly.
    assert f"{jobs}/{jobs} clients' text equal to the job's output" in p99["note"], p99
    assert "failed" not in p99["note"]
    assert _positive(by_figure["simulator writes a token -> /output client, p50"]["value"])
    for name in ("ai-runner", "nats", "gateway"):
        assert _positive(by_figure[f"{name} CPU per 1,000 tokens relayed"]["value"])


def test_a_token_is_timed_from_when_it_was_written() -> None:
    clock = {"start_at": 1000.0, "tokens_per_s": 10.0, "token_ends": [4, 9, 15]}
    reading = Reading("job", connected_at=1000.05)
    # Token 0 (ends at 4) written at 1000.1, token 2 (ends at 15) at 1000.3; 7 ends no token.
    reading.events = [(1000.112, 4), (1000.25, 7), (1000.31, 15)]
    assert [round(ms) for ms in token_latencies_ms(reading, clock)] == [12, 10]
    late = Reading("job", connected_at=1000.2, events=[(1000.21, 4), (1000.31, 15)])
    assert [round(ms) for ms in token_latencies_ms(late, clock)] == [10]  # catch-up left out


def test_tokens_in_a_window_are_counted_from_the_answers_clock() -> None:
    # Tokens written at 1000.1, 1000.2, ..., 1001.0 (ten of them).
    clock = {"start_at": 1000.0, "tokens_per_s": 10.0, "token_ends": list(range(1, 11))}
    assert tokens_between(clock, 999.0, 2000.0) == 10
    assert tokens_between(clock, 1000.25, 1000.55) == 3  # 1000.3, 1000.4, 1000.5
    assert tokens_between(clock, 1000.3, 1000.3) == 1
    assert tokens_between(clock, 1001.5, 1002.0) == 0
