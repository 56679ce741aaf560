"""A model's text through the whole system as it is written: the simulator's `urls.stream`,
the ai-runner's relay, the output log, the gateway's `/output`; resumed across reconnects,
through cut upstream streams, and still whole after Replicate removed the prediction's data.
Every service a real process."""

from dataclasses import dataclass, field
from typing import Any

import httpx

from jobs_testkit.sse import events
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

from .test_job_flow import audit, job_until, submit


@dataclass
class Read:
    """One `/output` connection: each `output` event's (id, text), and the `done` it ended with."""

    texts: list[tuple[int, str]] = field(default_factory=list)
    done: dict[str, Any] | None = None
    # The job's status when the first text arrived (read right after it).
    status_at_first_text: str | None = None

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.texts)


async def read_output(
    gateway: httpx.AsyncClient,
    job_id: str,
    *,
    last_event_id: int | None = None,
    stop_after: int | None = None,
) -> Read:
    """Reads `/output` to its `done` (or `stop_after` texts, then hangs up)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    seen = Read()
    timeout = httpx.Timeout(30.0)
    async with gateway.stream(
        "GET", f"/api/jobs/{job_id}/output", headers=headers, timeout=timeout
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in events(response):
            if event.event == "output":
                seen.texts.append((int(event.id or "-1"), event.json()["text"]))
                if len(seen.texts) == 1:
                    job = (await gateway.get(f"/api/jobs/{job_id}")).json()
                    seen.status_at_first_text = job["status"]
                if stop_after is not None and len(seen.texts) >= stop_after:
                    return seen
            elif event.event == "done":
                seen.done = event.json()
                return seen
    return seen


def assert_ids_count_code_points(texts: list[tuple[int, str]], start: int = 0) -> None:
    """Each `id:` is the characters delivered so far: nothing repeated, nothing skipped."""
    delivered = start
    for event_id, text in texts:
        assert text, "an output event carries text"
        delivered += len(text)
        assert event_id == delivered, (event_id, delivered, text)


async def test_the_text_arrives_as_it_is_written_and_equals_the_output(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    # About 130 tokens at 60 a second: written from 0.3 s to about 2.5 s, ending at 3 s.
    await simulator.put("/_sim/config", json={"latencyS": 3, "tokensPerS": 60})
    job_id = await submit(gateway, "streamed tides")
    seen = await read_output(gateway, job_id)
    job = await job_until(gateway, job_id, {"succeeded"})
    assert seen.done == {"status": "succeeded", "error": None}
    assert seen.text == job["output"]
    assert_ids_count_code_points(seen.texts)
    # Relayed live, token by token, before the job had ended.
    assert seen.status_at_first_text in ("pending", "processing")
    assert len(seen.texts) >= 10


async def test_a_reconnect_resumes_after_the_last_id(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 3, "tokensPerS": 60})
    job_id = await submit(gateway, "resumed tides")
    first = await read_output(gateway, job_id, stop_after=5)
    resumed_at = first.texts[-1][0]
    rest = await read_output(gateway, job_id, last_event_id=resumed_at)
    job = await job_until(gateway, job_id, {"succeeded"})
    assert first.text + rest.text == job["output"]
    assert_ids_count_code_points(rest.texts, start=resumed_at)
    # Resuming past the end of a finished job: `done` at once.
    end = len(job["output"])
    after = await read_output(gateway, job_id, last_event_id=end)
    assert (after.texts, after.done) == ([], {"status": "succeeded", "error": None})


async def test_cut_upstream_streams_lose_and_repeat_nothing(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    # Every connection to the prediction's stream is cut after a few tokens; each new one
    # replays from the start.
    await simulator.put(
        "/_sim/config", json={"latencyS": 3, "tokensPerS": 60, "streamDropRate": 1.0}
    )
    job_id = await submit(gateway, "cut tides")
    seen = await read_output(gateway, job_id)
    job = await job_until(gateway, job_id, {"succeeded"})
    assert seen.text == job["output"]
    assert_ids_count_code_points(seen.texts)


async def test_after_replicate_removed_the_data_the_whole_text_still_streams(
    stack: Stack, gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 1, "dataRemovedAfterS": 0.5})
    job_id = await submit(gateway, "forgotten tides")
    job = await job_until(gateway, job_id, {"succeeded"})
    prediction: dict[str, Any] = {}

    async def removed() -> bool:
        nonlocal prediction
        (prediction,) = await audit(simulator, job_id)
        return bool(prediction.get("data_removed"))

    await eventually(removed, within=15, what="the prediction's data removed")
    # Replicate has forgotten the text: its stream is gone, the system still has it.
    stream_url = prediction["urls"]["stream"]
    async with httpx.AsyncClient() as outside:
        assert (await outside.get(stream_url)).status_code == 404
    seen = await read_output(gateway, job_id)
    assert seen.text == job["output"]
    assert seen.done == {"status": "succeeded", "error": None}
    assert_ids_count_code_points(seen.texts)
    assert stack.simulator_url in stream_url
