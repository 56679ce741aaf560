"""The ai-runner's relay in-process against the real simulator over HTTP, real NATS and the real
output log: a streaming prediction's text lands in the log exactly once per character, in
chunks that follow on each other from 0, whether the stream is cut, the relay is replaced
mid-stream (redelivery) or the job ends first; progress of the text so far on core NATS; a
stream that answers 404 replaced by reading the prediction; and once through the `ai-runner`
process, from the create's `urls.stream` to the log."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ai_runner.adapters.output import LogAppender
from ai_runner.adapters.reader import HttpPredictionReader
from ai_runner.adapters.relay import RelayConsumer
from ai_runner.adapters.streams import HttpStreamSource
from ai_runner.fallback import FallbackPolicy
from ai_runner.handlers.progress import ProgressBoard
from ai_runner.handlers.relaying import Relay
from ai_runner.ports import NoObserver
from ai_runner.reconnect import ReconnectPolicy
from jobs_proto.api import JobProgress
from jobs_proto.events import JobCompleted, JobSubmitted
from jobs_proto.output import OutputWanted, decode_chunk, encode_wanted, output_stream
from jobs_proto.stream import StreamSpec, relay_consumer
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, ensure_stream, server_has_all
from jobs_runtime.http import HttpServer
from jobs_runtime.output import OutputLog
from jobs_runtime.progress import CoreNatsProgress
from jobs_runtime.settings import load_settings
from jobs_testkit.waiting import eventually
from replicate_sim.app import build_app
from replicate_sim.config import Settings as SimSettings
from replicate_sim.engine import Simulator

from .test_ai_runner_process import TOKEN as SIM_TOKEN
from .test_ai_runner_process import RunningSim, StartRunner, job, settled, wait_event
from .test_ai_runner_process import hooks as hooks
from .test_ai_runner_process import sim as sim
from .test_ai_runner_process import start_runner as start_runner

TOKEN = "r8_relay_test"
CREATE = "/v1/models/google/gemini-3-pro/predictions"
FINAL = {"succeeded", "failed", "canceled", "aborted"}


class Counting(NoObserver):
    """Streams open and how they ended, as the relay reported them."""

    def __init__(self) -> None:
        self.open = 0
        self.ends: list[str] = []
        self.reconnects: list[str] = []
        self.fallbacks: list[str] = []

    def stream_opened(self) -> None:
        self.open += 1

    def stream_closed(self, outcome: str) -> None:
        self.open -= 1
        self.ends.append(outcome)

    def reconnected(self, reason: str) -> None:
        self.reconnects.append(reason)

    def fallback_ended(self, outcome: str) -> None:
        self.fallbacks.append(outcome)


@dataclass
class System:
    nats_url: str
    nc: NATS
    jobs: StreamSpec
    output: str
    subjects: Subjects
    http: httpx.AsyncClient
    started: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def configure(self, **knobs: object) -> None:
        response = await self.http.put("/_sim/config", json=knobs)
        assert response.status_code == 200, response.text

    async def create(self, prompt: str) -> dict[str, Any]:
        response = await self.http.post(CREATE, json={"input": {"prompt": prompt}})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def prediction(self, prediction_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = (await self.http.get(f"/v1/predictions/{prediction_id}")).json()
        return answer

    async def submit(self, prediction: dict[str, Any], stream_url: str | None = None) -> uuid.UUID:
        job_id = uuid.uuid4()
        event = JobSubmitted(
            job_id=job_id,
            occurred_at=datetime.now(UTC),
            prediction_id=prediction["id"],
            stream_url=stream_url or prediction["urls"]["stream"],
        )
        await EventPublisher(self.nc.jetstream(), self.subjects).publish(event)
        return job_id

    async def want(self, job_id: uuid.UUID, prediction: dict[str, Any]) -> None:
        """What a gateway says when a client starts reading the job's text."""
        wanted = OutputWanted(job_id=job_id, prediction_id=prediction["id"])
        await self.nc.publish(self.subjects.output_wanted(job_id), encode_wanted(wanted))
        await server_has_all(self.nc)

    async def start_relay(
        self, ack_wait_s: float = 30.0, *, on_demand: bool = False
    ) -> "RunningRelay":
        """A relay on its own NATS connection, as a replica would be; stopped after the test."""
        nc = await nats.connect(self.nats_url)
        js = nc.jetstream()
        source = HttpStreamSource(max_streams=50, read_timeout_s=10.0)
        reader = HttpPredictionReader(
            api_token=TOKEN, base_url=str(self.http.base_url), timeout_s=5.0
        )
        observer = Counting()
        relay = Relay(
            source=source,
            log=LogAppender(OutputLog(js, self.output, self.subjects)),
            policy=ReconnectPolicy(base_s=0.05, cap_s=0.2, max_failures=5),
            observer=observer,
            progress=ProgressBoard(CoreNatsProgress(nc, self.subjects), observer),
            reader=reader,
            fallback=FallbackPolicy(every_s=0.2),
        )
        spec = relay_consumer(self.subjects, max_streams=50)
        spec = msgspec.structs.replace(spec, ack_wait_s=ack_wait_s)
        consumer = RelayConsumer(
            nc,
            js,
            stream=self.jobs.name,
            spec=spec,
            subjects=self.subjects,
            relay=relay,
            observer=observer,
            fetch_timeout_s=0.5,
            on_demand=on_demand,
        )
        stop = asyncio.Event()
        task = asyncio.ensure_future(consumer.run(stop))
        await asyncio.wait_for(consumer.ready.wait(), 5)

        async def stopped() -> None:
            stop.set()
            if not task.done():
                await task
            await source.aclose()
            await reader.aclose()
            if not nc.is_closed:
                await nc.close()

        self.started.append(stopped)
        return RunningRelay(consumer, observer, nc, task)

    async def text(self, job_id: uuid.UUID, prediction_id: str) -> str:
        return await log_text(self.nc, self.subjects, self.output, job_id, prediction_id)

    async def final(self, prediction_id: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        async def ended() -> bool:
            found.append(await self.prediction(prediction_id))
            return found[-1]["status"] in FINAL

        await eventually(ended, within=15)
        return found[-1]

    async def settled(self) -> bool:
        info = await self.nc.jetstream().consumer_info(self.jobs.name, "ai-runner-relay")
        return (info.num_pending or 0) == 0 and (info.num_ack_pending or 0) == 0


async def log_text(
    nc: NATS, subjects: Subjects, stream: str, job_id: uuid.UUID, prediction_id: str
) -> str:
    """The log's text, its chunks checked to follow on each other from 0."""
    js = nc.jetstream()
    subject = subjects.output(job_id, prediction_id)
    info = await js.stream_info(stream, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    text, end = "", 0
    if not count:
        return text
    sub = await js.subscribe(subject, ordered_consumer=True, stream=stream)
    try:
        for _ in range(count):
            chunk = decode_chunk((await sub.next_msg(timeout=5)).data)
            assert chunk.offset == end, "chunks must follow on each other"
            text, end = text + chunk.text, chunk.end
    finally:
        await sub.unsubscribe()
    return text


@dataclass
class RunningRelay:
    consumer: RelayConsumer
    observer: Counting
    nc: NATS
    task: "asyncio.Future[None]"

    async def crash(self) -> None:
        """The process dies: its connection goes first, so no nak reaches JetStream and only
        ack_wait frees its messages."""
        await self.nc.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def system(
    nats_url: str, nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> AsyncIterator[System]:
    engine = Simulator(load_settings(SimSettings, {"SIM_API_TOKEN": TOKEN}))
    await engine.start()
    server = HttpServer(build_app(engine), "127.0.0.1", 0)
    await server.start()
    output = output_stream(subjects, jobs_stream_ready.name, longest_deadline_s=600)
    await ensure_stream(nats_client.jetstream(), output)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            running = System(nats_url, nats_client, jobs_stream_ready, output.name, subjects, http)
            await running.configure(latencyS=0.05, tokensPerS=2000)
            try:
                yield running
            finally:
                for stop in running.started:
                    await stop()
    finally:
        await server.stop()
        await engine.stop()
        await nats_client.jetstream().delete_stream(output.name)


async def relayed_exactly(system: System, prediction: dict[str, Any], job_id: uuid.UUID) -> str:
    return await relayed_exactly_when(system, prediction, job_id, settled=True)


async def relayed_exactly_when(
    system: System, prediction: dict[str, Any], job_id: uuid.UUID, *, settled: bool
) -> str:
    """The log holds the prediction's final output exactly (and, with `settled`, every relay
    message is acknowledged)."""
    final = await system.final(prediction["id"])
    expected = "".join(final["output"] or [])
    assert expected

    async def complete() -> bool:
        return await system.text(job_id, prediction["id"]) == expected

    await eventually(complete, within=10)
    if settled:
        await eventually(system.settled, within=10)
    return expected


async def test_streamed_text_lands_in_the_log_exactly_and_the_message_is_acknowledged(
    system: System,
) -> None:
    observer = (await system.start_relay()).observer
    predictions = [await system.create(topic) for topic in ("tides", "glaciers", "moths")]
    jobs = [await system.submit(p) for p in predictions]
    for prediction, job_id in zip(predictions, jobs, strict=True):
        await relayed_exactly(system, prediction, job_id)
    assert observer.ends == ["done"] * 3
    assert observer.open == 0


async def test_on_demand_a_stream_is_read_only_once_a_client_reads_its_text(
    system: System,
) -> None:
    await system.configure(tokensPerS=200, latencyS=1.5)
    running = await system.start_relay(on_demand=True)
    watched, unwatched = await system.create("tides"), await system.create("glaciers")
    watched_job, unwatched_job = await system.submit(watched), await system.submit(unwatched)
    # Both are held; neither stream is opened while nobody reads.
    await eventually(lambda: running.consumer.waiting == 2)
    assert running.observer.open == 0
    await system.want(watched_job, watched)
    # Replicate's stream replays from its start: nothing is lost by starting late.
    await relayed_exactly_when(system, watched, watched_job, settled=False)
    assert await system.text(unwatched_job, unwatched["id"]) == ""
    assert running.consumer.waiting == 1
    # The unwatched job ends (its result goes by on the bus): its message is let go unread.
    await EventPublisher(system.nc.jetstream(), system.subjects).publish(
        JobCompleted(
            job_id=unwatched_job,
            occurred_at=datetime.now(UTC),
            prediction_id=unwatched["id"],
            prediction_status="succeeded",
        )
    )
    await eventually(system.settled, within=10)
    assert running.consumer.waiting == 0
    assert running.observer.ends == ["done"]


async def test_cut_connections_lose_and_repeat_nothing(system: System) -> None:
    # Nine connections in ten are cut: that none of six streams is cut is a one-in-a-million.
    await system.configure(streamDropRate=0.9, tokensPerS=300, latencyS=0.5)
    observer = (await system.start_relay()).observer
    topics = ("tides", "glaciers", "moths", "owls", "dunes", "reefs")
    predictions = [await system.create(topic) for topic in topics]
    jobs = [await system.submit(p) for p in predictions]
    for prediction, job_id in zip(predictions, jobs, strict=True):
        await relayed_exactly(system, prediction, job_id)
    assert "cut" in observer.reconnects or "error" in observer.reconnects


async def test_a_relay_that_dies_mid_stream_is_replaced_and_the_log_stays_exact(
    system: System,
) -> None:
    # About 2 s of text (its last tokens come at the end, `latencyS`).
    await system.configure(tokensPerS=60, latencyS=2)
    first = await system.start_relay(ack_wait_s=1.0)
    prediction = await system.create("tides")
    job_id = await system.submit(prediction)

    async def some_text() -> bool:
        return len(await system.text(job_id, prediction["id"])) > 0

    await eventually(some_text, within=10)
    await first.crash()
    partial = await system.text(job_id, prediction["id"])
    second = (await system.start_relay(ack_wait_s=1.0)).observer
    expected = await relayed_exactly(system, prediction, job_id)
    assert len(partial) < len(expected), "the first relay was to die mid-stream"
    assert second.ends == ["done"]


async def test_progress_of_the_text_so_far_goes_out_on_core_nats(system: System) -> None:
    # About 1.5 s of text: several ticks of progress.
    await system.configure(tokensPerS=60, latencyS=1.5)
    received: list[JobProgress] = []
    sub = await system.nc.subscribe(system.subjects.all_progress, cb=collect(received))
    try:
        await system.start_relay()
        prediction = await system.create("tides")
        job_id = await system.submit(prediction)
        expected = await relayed_exactly(system, prediction, job_id)

        async def last_arrived() -> bool:
            return bool(received) and received[-1].output == expected

        await eventually(last_arrived, within=5)
    finally:
        await sub.unsubscribe()
    assert len(received) >= 2, "the text came in one piece"
    assert {(p.job_id, p.prediction_id) for p in received} == {(job_id, prediction["id"])}
    seqs = [p.seq for p in received]
    assert seqs == sorted(set(seqs)), "seq grows with every message"
    assert all(expected.startswith(p.output) and p.seq == len(p.output) for p in received)


async def test_a_stream_that_answers_404_is_replaced_by_reading_the_prediction(
    system: System,
) -> None:
    # Running for about 1.5 s: the first reads find part of the text, the last all of it.
    await system.configure(tokensPerS=60, latencyS=1.5)
    observer = (await system.start_relay()).observer
    received: list[JobProgress] = []
    sub = await system.nc.subscribe(system.subjects.all_progress, cb=collect(received))
    try:
        prediction = await system.create("tides")
        lost = f"{system.http.base_url}/v1/streams/{prediction['id']}-removed"
        job_id = await system.submit(prediction, stream_url=lost)
        expected = await relayed_exactly(system, prediction, job_id)

        async def last_arrived() -> bool:
            return bool(received) and received[-1].output == expected

        await eventually(last_arrived, within=5)
    finally:
        await sub.unsubscribe()
    assert observer.ends == ["gone"]
    assert observer.fallbacks == ["ended"]


def collect(into: list[JobProgress]) -> Callable[[Msg], Awaitable[None]]:
    async def received(msg: Msg) -> None:
        into.append(msgspec.json.decode(msg.data, type=JobProgress))

    return received


async def test_a_canceled_or_ended_job_stops_its_reader(system: System) -> None:
    # Slow enough that neither prediction finishes by itself during the test.
    await system.configure(tokensPerS=5, latencyS=8)
    observer = (await system.start_relay()).observer
    canceled = await system.create("tides")
    ended = await system.create("glaciers")
    canceled_job = await system.submit(canceled)
    ended_job = await system.submit(ended)

    async def reading() -> bool:
        return bool(await system.text(canceled_job, canceled["id"])) and bool(
            await system.text(ended_job, ended["id"])
        )

    await eventually(reading, within=10)
    # Canceled on Replicate: its stream says `done` with reason canceled.
    response = await system.http.post(f"/v1/predictions/{canceled['id']}/cancel")
    assert response.status_code == 200, response.text
    # The other job ends on the bus (as a lost webhook's poll would say) while its prediction
    # still streams: the reader stops without waiting for the stream.
    await EventPublisher(system.nc.jetstream(), system.subjects).publish(
        JobCompleted(
            job_id=ended_job,
            occurred_at=datetime.now(UTC),
            prediction_id=ended["id"],
            prediction_status="canceled",
        )
    )
    await eventually(system.settled, within=10)
    assert sorted(observer.ends) == ["canceled", "job_ended"]
    assert observer.open == 0
    assert (await system.prediction(ended["id"]))["status"] not in FINAL


# The `ai-runner` process ------------------------------------------------------------------------


async def test_the_ai_runner_process_relays_a_streaming_jobs_text(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    """The whole path in the process: the create's `urls.stream` goes out in `job.submitted`,
    the relay reads it into the log the process made sure of."""
    await sim.configure(latencyS=0.5, tokensPerS=1000)
    runner = await start_runner()
    event = job("title_generation", topic="tides", count=3)
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)
    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    assert submitted.stream_url == f"{sim.url}/v1/streams/{submitted.prediction_id}"
    # A client reads the job's text: a gateway says so (the relay reads on demand), and says
    # it again while its client reads, as gateways do: a word sent before the runner's
    # subscription is made (a loaded machine) is lost on core NATS.
    wanted = OutputWanted(job_id=event.job_id, prediction_id=submitted.prediction_id)

    async def say_wanted() -> None:
        await nats_client.publish(subjects.output_wanted(event.job_id), encode_wanted(wanted))

    await say_wanted()
    output = f"{jobs_stream_ready.name}_OUTPUT"
    headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
    try:
        found: list[dict[str, Any]] = []

        async def ended() -> bool:
            response = await sim.http.get(
                f"/v1/predictions/{submitted.prediction_id}", headers=headers
            )
            found.append(response.json())
            return found[-1]["status"] in FINAL

        await eventually(ended, within=10)
        expected = "".join(found[-1]["output"])

        async def relayed() -> bool:
            text = await log_text(
                nats_client, subjects, output, event.job_id, submitted.prediction_id
            )
            if text != expected:
                await say_wanted()
            return text == expected

        await eventually(relayed, within=10)
        await eventually(lambda: settled(nats_client, jobs_stream_ready, "ai-runner-relay"))
        ended_done = 'ai_runner_relay_streams_ended_total{outcome="done"}'
        assert await runner.metric(ended_done) == 1
    finally:
        await nats_client.jetstream().delete_stream(output)
