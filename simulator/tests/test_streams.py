"""`urls.stream` over real HTTP, read by the `replicate` package's own stream parser."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from replicate.stream import EventSource, ServerSentEvent

from jobs_testkit.waiting import eventually
from replicate_sim.outputs import count_tokens
from replicate_sim.streams import sse

from .calls import create, create_many, final, get
from .conftest import RunningSimulator, replicate_client, running_simulator, settings

OUTPUT = ServerSentEvent.EventType.OUTPUT
DONE = ServerSentEvent.EventType.DONE
ERROR = ServerSentEvent.EventType.ERROR
ACCEPT = {"Accept": "text/event-stream", "Cache-Control": "no-store"}


@dataclass
class Read:
    """One connection to a stream: its events as the client parsed them, and how it ended."""

    events: list[ServerSentEvent] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    cut: bool = False

    @property
    def text(self) -> str:
        return "".join(e.data for e in self.events if e.event == OUTPUT)

    @property
    def done(self) -> dict[str, Any] | None:
        last = self.events[-1] if self.events else None
        return json.loads(last.data) if last is not None and last.event == DONE else None


async def read(simulator: RunningSimulator, url: str, until: int | None = None) -> Read:
    """Every event of one connection (or the first `until`), parsed line by line by
    `replicate`'s decoder; a connection closed midway is recorded as cut."""
    seen = Read()
    decoder = EventSource.Decoder()
    try:
        async with simulator.http.stream("GET", url, headers=ACCEPT) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                seen.raw.append(line)
                event = decoder.decode(line.rstrip("\n"))
                if event is not None:
                    seen.events.append(event)
                    if until is not None and len(seen.events) >= until:
                        break
    except httpx.RemoteProtocolError:
        seen.cut = True
    return seen


def ids(seen: Read) -> list[int]:
    return [int(e.id.split(":")[0]) for e in seen.events]


def joined(prediction: dict[str, Any]) -> str:
    return "".join(prediction["output"] or [])


# The URL -------------------------------------------------------------------------------------


async def test_a_streaming_model_has_a_stream_url_and_another_model_has_none(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=60)
    streaming = await create(simulator)
    assert streaming["urls"]["stream"] == f"{simulator.url}/v1/streams/{streaming['id']}"
    response = await simulator.http.post(
        "/v1/predictions", json={"version": "acme/writer", "input": {"prompt": "tides"}}
    )
    other = response.json()
    assert "stream" not in other["urls"]
    answer = await simulator.http.get(f"/v1/streams/{other['id']}", headers=ACCEPT)
    assert answer.status_code == 404
    assert (await simulator.http.get("/v1/streams/nosuchid", headers=ACCEPT)).status_code == 404


# The format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["plain", "two\nlines", "ends with a newline\n", "\n\n", " leading space", ""]
)
def test_each_line_is_a_data_line_and_the_text_comes_back_whole(text: str) -> None:
    decoder = EventSource.Decoder()
    events = [decoder.decode(line) for line in sse("output", 7, text).decode().split("\n")]
    parsed = [e for e in events if e is not None]
    assert len(parsed) == 1
    assert (parsed[0].event, parsed[0].id, parsed[0].data) == (OUTPUT, "7:0", text)


@pytest.mark.parametrize("tokens_per_s", [400, 40], ids=["text-before-the-end", "end-first"])
async def test_the_replicate_client_streams_the_text_that_becomes_the_output(
    simulator: RunningSimulator, tokens_per_s: int
) -> None:
    await simulator.configure(latencyS=0.5, tokensPerS=tokens_per_s)
    async with replicate_client(simulator.url) as client:
        created = await client.models.predictions.async_create(
            model="google/gemini-3-pro", input={"prompt": "the tides of the moon"}
        )
        events = [event async for event in created.async_stream()]
    outputs = [e for e in events if e.event == OUTPUT]
    assert len(outputs) > 1  # written live, not at once
    assert events[-1].event == DONE
    assert json.loads(events[-1].data) == {}
    ended = await final(simulator, created.id)
    assert ended["status"] == "succeeded"
    assert "".join(str(e) for e in outputs) == joined(ended)
    numbers = [int(e.id.split(":")[0]) for e in events]
    assert numbers == sorted(set(numbers))


async def test_after_the_end_a_new_connection_replays_everything_then_done(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=0.1, tokensPerS=10_000)
    created = await create(simulator)
    ended = await final(simulator, created["id"])
    for _ in range(2):
        seen = await read(simulator, created["urls"]["stream"])
        assert [e.event for e in seen.events] == [OUTPUT, DONE]
        assert seen.text == joined(ended)
        assert seen.done == {}
        # The answer's first chunk ends with a blank line: two empty `data:` lines.
        assert "data: " in seen.raw
        assert "\n\n" in seen.text


# How it ends ---------------------------------------------------------------------------------


async def test_a_failure_sends_error_then_done_with_reason_error(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=0.3, predictionFailRate=1)
    created = await create(simulator)
    seen = await read(simulator, created["urls"]["stream"])
    kinds = [e.event for e in seen.events]
    assert kinds[-2:] == [ERROR, DONE]
    assert set(kinds[:-2]) <= {OUTPUT}
    error = (await get(simulator, created["id"]))["error"]
    assert json.loads(seen.events[-2].data) == {"detail": error}
    assert seen.done == {"reason": "error"}
    async with replicate_client(simulator.url) as client:
        prediction = await client.predictions.async_get(created["id"])
        with pytest.raises(RuntimeError, match="Simulated model failure"):
            _ = [event async for event in prediction.async_stream()]


async def test_a_cancel_ends_the_stream_with_reason_canceled(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=10, tokensPerS=20)
    created = await create(simulator)
    reading = asyncio.create_task(read(simulator, created["urls"]["stream"]))
    await eventually(
        lambda: bool(joined(simulator.sim.show(simulator.sim.get(created["id"])))),  # type: ignore[arg-type]
        what="some text is written",
    )
    canceled = await simulator.http.post(f"/v1/predictions/{created['id']}/cancel")
    assert canceled.json()["status"] == "canceled"
    seen = await asyncio.wait_for(reading, 5)
    assert seen.done == {"reason": "canceled"}
    assert seen.text
    assert seen.text == joined(await get(simulator, created["id"]))


# Idle, cuts and removal ----------------------------------------------------------------------


async def test_an_idle_stream_is_408_before_any_event_and_ends_after_one() -> None:
    async with running_simulator(settings(SIM_STREAM_IDLE_S=0.3)) as simulator:
        await simulator.configure(latencyS=600)  # starts writing after a minute
        quiet = await create(simulator)
        answer = await simulator.http.get(quiet["urls"]["stream"], headers=ACCEPT)
        assert answer.status_code == 408
        # Before any text was written (not at the text's start), and not at once: the stream
        # below, whose text starts before the idle time is up, is not refused.
        prediction = simulator.sim.get(quiet["id"])
        assert prediction is not None
        assert simulator.sim.written(prediction) == (0, None)

        # All the text in a blink from 0.2 s, then nothing until the end at 2 s.
        await simulator.configure(latencyS=2, tokensPerS=10_000)
        written = await create(simulator)
        seen = await asyncio.wait_for(read(simulator, written["urls"]["stream"]), 3)
        assert seen.done is None
        assert not seen.cut
        assert seen.text == "".join(simulator.sim.get(written["id"]).chunks)  # type: ignore[union-attr]


async def test_a_drop_rate_of_one_cuts_every_connection_and_each_replays_from_the_start(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=1, tokensPerS=200, streamDropRate=1)
    created = await create(simulator)
    reads = [await read(simulator, created["urls"]["stream"]) for _ in range(3)]
    ended = await final(simulator, created["id"])
    reads.append(await read(simulator, created["urls"]["stream"]))
    for seen in reads:
        assert seen.cut
        assert seen.events
        assert seen.done is None
        assert seen.text
        assert joined(ended).startswith(seen.text)
        assert ids(seen) == sorted(set(ids(seen)))
    await simulator.configure(streamDropRate=0)
    whole = await read(simulator, created["urls"]["stream"])
    assert whole.text == joined(ended)
    assert whole.done == {}


async def test_once_the_data_is_removed_the_stream_is_404(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0.1, dataRemovedAfterS=0.2)
    created = await create(simulator)
    await eventually(
        lambda: simulator.sim.get(created["id"]).data_removed,  # type: ignore[union-attr]
        what="the data is removed",
    )
    shown = await get(simulator, created["id"])
    assert shown["data_removed"] is True
    answer = await simulator.http.get(created["urls"]["stream"], headers=ACCEPT)
    assert answer.status_code == 404
    assert shown["metrics"]["output_token_count"] > 0


async def test_predictions_without_a_reader_hold_no_task(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=60)
    before = len(asyncio.all_tasks())
    created = await create_many(simulator, [None] * 500)
    assert all("stream" in p["urls"] for p in created)
    await eventually(lambda: len(asyncio.all_tasks()) <= before, what="no task per prediction")


# Metrics -------------------------------------------------------------------------------------


async def test_a_language_model_reports_token_metrics(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0.5, tokensPerS=400)
    prompt = "the tides of the moon"
    created = await create(simulator, prompt=prompt)
    ended = await final(simulator, created["id"])
    metrics = ended["metrics"]
    assert set(metrics) == {
        "predict_time",
        "total_time",
        "input_token_count",
        "output_token_count",
        "tokens_per_second",
        "time_to_first_token",
    }
    assert metrics["input_token_count"] == count_tokens(prompt) == 5
    assert metrics["output_token_count"] == count_tokens(joined(ended))
    assert metrics["time_to_first_token"] == 0.0025
    assert metrics["tokens_per_second"] == pytest.approx(
        metrics["output_token_count"] / metrics["predict_time"], rel=1e-3
    )
    response = await simulator.http.post(
        "/v1/predictions", json={"version": "acme/writer", "input": {"prompt": prompt}}
    )
    other = await final(simulator, response.json()["id"])
    assert set(other["metrics"]) == {"predict_time", "total_time"}


async def test_the_audit_tells_when_each_character_was_written(
    simulator: RunningSimulator,
) -> None:
    """What the token-latency benchmark reads: the text's clock and where each token ends."""
    await simulator.configure(latencyS=0.3, tokensPerS=200)
    before = time.time()
    created = await create(simulator, "http://127.0.0.1:9/hook?job=audited", ["completed"])
    ended = await final(simulator, created["id"])
    after = time.time()
    response = await simulator.http.get("/_sim/predictions", params={"job": "audited"})
    (record,) = response.json()["results"]
    clock = record["sim_stream"]
    assert clock["tokens_per_s"] == 200
    # On the real clock, in seconds: the text started while the test waited for it.
    assert before <= clock["start_at"] <= after
    ends = clock["token_ends"]
    assert ends == sorted(ends)
    assert ends[-1] == len(joined(ended))
