"""One job is one trace: every service a process exporting to a local OTLP receiver, one job
submitted with a browser's `traceparent` and watched over SSE; its spans from the gateway, the
ai-runner, webhook-ingest and the job-store form one tree under the browser's span."""

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobs_testkit.otlp import OtlpReceiver, ReceivedSpan, running_otlp_receiver
from jobs_testkit.sse import events
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

TERMINAL = {"succeeded", "failed", "canceled"}
# Each hop of the flow, as (service, span name): the spans "why is job X slow" reads.
HOPS = {
    ("gateway", "POST /api/ideation/generate-script"),
    ("gateway", "publish job.requested"),
    ("ai-runner", "process job.requested"),
    ("ai-runner", "replicate create"),
    ("ai-runner", "publish job.submitted"),
    ("webhook-ingest", "POST /api/webhooks/replicate"),
    ("webhook-ingest", "publish job.completed"),
    ("job-store", "process job.completed"),
    ("job-store", "job-store commit"),
    ("job-store", "announce job_change"),
    ("gateway", "sse push"),
}


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with running_otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack_overrides(otlp: OtlpReceiver) -> dict[str, str]:
    # A short export delay: the spans arrive within a fraction of a second of their end.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def _tree_is_whole(spans: list[ReceivedSpan], browser_span: str) -> bool:
    """Every span's parent arrived too, but the gateway's, whose parent is the browser's."""
    ids = {s.span_id for s in spans}
    return all(s.parent_id in ids or s.parent_id == browser_span for s in spans)


async def test_one_job_is_one_trace_from_admission_to_the_sse_push(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient, otlp: OtlpReceiver, stack: Stack
) -> None:
    # Webhooks held until the stream is open: the end must reach the stream as a push, not
    # in the stream's first read (a loaded machine can open it after the job ended).
    await simulator.put("/_sim/config", json={"latencyS": 0.3, "holdWebhooks": True})
    trace_id, browser_span = secrets.token_hex(16), secrets.token_hex(8)
    created = await gateway.post(
        "/api/ideation/generate-script",
        json={"topic": "tides"},
        headers={"traceparent": f"00-{trace_id}-{browser_span}-01"},
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["jobId"]

    final: dict[str, Any] = {}
    released = False
    async with gateway.stream("GET", f"/api/jobs/{job_id}/events", timeout=30) as response:
        assert response.status_code == 200
        async with asyncio.timeout(30):
            async for event in events(response):
                if event.event == "status" and not released:
                    await simulator.put("/_sim/config", json={"holdWebhooks": False})
                    released = True
                if event.event == "status" and event.json()["status"] in TERMINAL:
                    final = event.json()
                    break
    assert final["status"] == "succeeded"

    def mine() -> list[ReceivedSpan]:
        return [s for s in otlp.received() if s.attributes.get("job.id") == job_id]

    def in_trace() -> list[ReceivedSpan]:
        return [s for s in otlp.received() if s.trace_id == trace_id]

    def pushed_the_end(s: ReceivedSpan) -> bool:
        return s.name == "sse push" and s.attributes.get("job.status") == "succeeded"

    def complete() -> bool:
        # The push of the end is waited for by name: an earlier push (of `running`) satisfies
        # the hops while the end's span may still sit in the gateway's export batch.
        spans = in_trace()
        return (
            {(s.service, s.name) for s in spans} >= HOPS
            and any(pushed_the_end(s) for s in spans)
            and _tree_is_whole(spans, browser_span)
        )

    await eventually(complete, within=20, what="every hop of the job's trace exported")

    # Every span naming the job is in its one trace.
    assert {s.trace_id for s in mine()} == {trace_id}
    spans = in_trace()
    by_id = {s.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent_id not in by_id]
    assert (root.service, root.name, root.kind) == (
        "gateway",
        "POST /api/ideation/generate-script",
        "server",
    )
    assert root.parent_id == browser_span
    assert root.attributes["http.response.status_code"] == 202
    assert root.attributes["job.id"] == job_id
    assert not any(s.error for s in spans), [s for s in spans if s.error]

    def ancestors(span: ReceivedSpan) -> list[tuple[str, str]]:
        chain = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            chain.append((span.service, span.name))
        return chain

    # The hops follow one another: the SSE push of the result comes from the job-store's
    # commit of the webhook's event, which follows from the ai-runner's handling of the
    # request the gateway admitted.
    (completed_commit,) = [
        s
        for s in spans
        if s.name == "job-store commit" and s.attributes["job.event.kind"] == "completed"
    ]
    pushes = [s for s in spans if pushed_the_end(s)]
    assert len(pushes) == 1
    chain = ancestors(pushes[0])
    assert chain[0] == ("job-store", "announce job_change")
    assert chain[1] == ("job-store", "job-store commit")
    assert by_id[pushes[0].parent_id].parent_id == completed_commit.span_id
    assert chain[2:] == [
        ("job-store", "process job.completed"),
        ("webhook-ingest", "publish job.completed"),
        ("webhook-ingest", "POST /api/webhooks/replicate"),
        ("ai-runner", "process job.requested"),
        ("gateway", "publish job.requested"),
        ("gateway", "POST /api/ideation/generate-script"),
    ]
    (create,) = [s for s in spans if s.name == "replicate create"]
    assert create.kind == "client"
    assert ancestors(create)[0] == ("ai-runner", "process job.requested")

    # The ai-runner's log line of the create names the trace and the span it was logged in.
    (handling,) = [
        s for s in spans if s.name == "process job.requested" and s.service == "ai-runner"
    ]

    def logged() -> list[dict[str, Any]]:
        assert stack.log_dir is not None
        lines = (stack.log_dir / "ai-runner.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [
            e for e in entries if e.get("msg") == "prediction created" and e.get("job_id") == job_id
        ]

    await eventually(lambda: bool(logged()), what="the ai-runner logged the create")
    (line,) = logged()
    assert (line["trace_id"], line["span_id"]) == (trace_id, handling.span_id)
