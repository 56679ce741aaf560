"""The `ai-runner` command as a real process over real NATS, against the simulator running in
this test's event loop: requested jobs become predictions, once, whatever Replicate answers and
even when a runner is killed mid-create; cancels cancel; Replicate's deadline and limits hold."""

import asyncio
import json
import re
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig
from nats.js.errors import NotFoundError

from ai_runner.adapters.limits import CREATIONS
from ai_runner.adapters.limits import bucket_name as limits_bucket_name
from jobs_proto.api import GetJob, JobReply, JobView
from jobs_proto.events import (
    AnyJobEvent,
    JobCancelRequested,
    JobCompleted,
    JobFailed,
    JobRequested,
    JobStarted,
    JobSubmitted,
    decode_event,
)
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.http import HttpServer
from jobs_runtime.settings import load_settings
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.receiver import Receiver, running_receiver
from jobs_testkit.servers import free_port
from jobs_testkit.waiting import eventually
from replicate_sim.app import build_app
from replicate_sim.config import Settings as SimSettings
from replicate_sim.engine import Simulator

MODEL = "google/gemini-3-pro"
TOKEN = "r8_ai_runner_test"
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class Creates:
    """Creation requests reaching the simulator: how many began, whether each waits before
    the simulator sees it (`hold_creates` set: until that event is set, so a test can act
    while creates are in flight), and whether its answer is held back after the simulator
    made the prediction (`hold_answers` set: until it is set), so a test can kill the runner
    between a create and its answer."""

    started: int = 0
    hold_creates: asyncio.Event | None = None
    hold_answers: asyncio.Event | None = None

    def around(self, app: Asgi) -> Asgi:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            creating = scope["type"] == "http" and scope["method"] == "POST"
            if creating and scope["path"].endswith("/predictions"):
                self.started += 1
                if self.hold_creates is not None:
                    await self.hold_creates.wait()
                held = self.hold_answers
                if held is not None:

                    async def held_send(message: MutableMapping[str, Any]) -> None:
                        await held.wait()
                        await send(message)

                    await app(scope, receive, held_send)
                    return
            await app(scope, receive, send)

        return counted


@dataclass
class RunningSim:
    """The simulator in this test's event loop: its engine, its URL, its creation requests."""

    engine: Simulator
    url: str
    http: httpx.AsyncClient
    creates: Creates

    async def configure(self, **knobs: object) -> None:
        response = await self.http.put("/_sim/config", json=knobs)
        assert response.status_code == 200, response.text

    async def audit(self, job_id: uuid.UUID) -> list[dict[str, Any]]:
        response = await self.http.get("/_sim/predictions", params={"job": str(job_id)})
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    """Where the simulator's webhooks go, answered 200, so none are retried during a test."""
    async with running_receiver("/api/webhooks/replicate") as receiver:
        yield receiver


@pytest.fixture
async def sim() -> AsyncIterator[RunningSim]:
    settings = load_settings(
        SimSettings, {"SIM_API_TOKEN": TOKEN, "SIM_WEBHOOK_RETRY_S": "0.1,0.2"}
    )
    engine = Simulator(settings)
    await engine.start()
    creates = Creates()
    server = HttpServer(creates.around(build_app(engine)), "127.0.0.1", 0)
    await server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            running = RunningSim(engine, url, http, creates)
            # Long enough that no prediction finishes while a test looks at it.
            await running.configure(latencyS=60)
            yield running
    finally:
        await server.stop()
        await engine.stop()


@dataclass
class RunnerProcess:
    """One `ai-runner` process and what the test needs to read its work."""

    process: ServiceProcess
    admin_port: int
    killed: bool = False

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.process.log.splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return lines

    def logged(self, text: str) -> int:
        return sum(text in str(entry.get("msg", "")) for entry in self.log_lines())

    async def ready(self) -> None:
        # In a thread: the simulator lives in this loop and must keep answering meanwhile.
        url = f"http://127.0.0.1:{self.admin_port}/readyz"
        await asyncio.to_thread(self.process.wait_http, url, 30.0)

    async def stop(self) -> int:
        if self.killed:
            return 0
        return await asyncio.to_thread(self.process.terminate, 30.0)

    async def metric(self, name: str) -> float:
        """A sample of the runner's `/metrics` (0 when absent), e.g. `x_total{stage="a"}`."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        async with httpx.AsyncClient() as http:
            text = (await http.get(url)).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def kill(self) -> None:
        """SIGKILL: no drain, no ack, the message in hand stays pending until ack_wait."""
        self.process.signal(signal.SIGKILL)
        self.process.process.wait(10)
        self.killed = True


StartRunner = Callable[..., Awaitable[RunnerProcess]]


@pytest.fixture
async def start_runner(
    nats_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    hooks: Receiver,
    tmp_path: Path,
) -> AsyncIterator[StartRunner]:
    """Start `ai-runner` processes (environment overrides as keywords); each is stopped with
    SIGTERM afterwards and must exit 0."""
    started: list[RunnerProcess] = []

    async def start(**overrides: str) -> RunnerProcess:
        admin_port = free_port()
        env = {
            "NATS_URL": nats_url,
            "JOBS_STREAM": jobs_stream_ready.name,
            "SUBJECT_PREFIX": subjects.prefix,
            "ADMIN_PORT": str(admin_port),
            "REPLICATE_BASE_URL": sim.url,
            "REPLICATE_API_TOKEN": TOKEN,
            "REPLICATE_WEBHOOK_URL": hooks.url,
            # Short retries keep the retry scenarios quick.
            "RETRY_BASE_S": "0.1",
            "RETRY_CAP_S": "0.3",
            **overrides,
        }
        log = tmp_path / f"ai-runner-{len(started)}.log"
        runner = RunnerProcess(ServiceProcess([command_path("ai-runner")], env, log), admin_port)
        runner.process.start()
        started.append(runner)
        await runner.ready()
        return runner

    async with AsyncExitStack() as stack:
        stack.push_async_callback(_stop_all, started)
        yield start


async def _stop_all(started: list[RunnerProcess]) -> None:
    codes = [await runner.stop() for runner in started]
    assert codes == [0] * len(codes), [r.process.log for r in started]


def job(job_type: str = "script_generation", **job_input: Any) -> JobRequested:
    return JobRequested(
        job_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        user_id="user-1",
        job_type=job_type,
        input=job_input or {"topic": "tides"},
    )


async def last_event(
    nc: NATS, stream: StreamSpec, subjects: Subjects, kind: str, job_id: uuid.UUID
) -> AnyJobEvent | None:
    try:
        msg = await nc.jetstream().get_last_msg(
            stream.name, f"{subjects.prefix}job.{kind}.{job_id}"
        )
    except NotFoundError:
        return None
    assert msg.data is not None
    return decode_event(msg.data)


async def wait_event(
    nc: NATS,
    stream: StreamSpec,
    subjects: Subjects,
    kind: str,
    job_id: uuid.UUID,
    within: float = 10.0,
) -> AnyJobEvent:
    found: list[AnyJobEvent] = []

    async def appeared() -> bool:
        event = await last_event(nc, stream, subjects, kind, job_id)
        if event is not None:
            found.append(event)
        return event is not None

    await eventually(appeared, within=within)
    return found[-1]


async def events_of_kind(nc: NATS, stream: StreamSpec, subjects: Subjects, kind: str) -> int:
    info = await nc.jetstream().stream_info(
        stream.name, subjects_filter=f"{subjects.prefix}job.{kind}.>"
    )
    return sum((info.state.subjects or {}).values())


async def settled(nc: NATS, stream: StreamSpec, durable: str = "ai-runner") -> bool:
    """Every message the runner was given on `durable` is acknowledged."""
    info = await nc.jetstream().consumer_info(stream.name, durable)
    return (info.num_pending or 0) == 0 and (info.num_ack_pending or 0) == 0


# The happy path ----------------------------------------------------------------------------------


async def test_a_requested_job_gets_one_prediction_with_its_webhook(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    hooks: Receiver,
    start_runner: StartRunner,
) -> None:
    await start_runner()
    event = job("video_outline", topic="tides", sections=4)
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)

    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    assert submitted.attempt == 1
    await eventually(lambda: settled(nats_client, jobs_stream_ready))

    (audited,) = await sim.audit(event.job_id)
    assert audited["id"] == submitted.prediction_id
    assert audited["model"] == MODEL
    assert "tides" in audited["input"]["prompt"]
    assert "4 sections" in audited["input"]["prompt"]
    prediction = sim.engine.get(submitted.prediction_id)
    assert prediction is not None
    assert prediction.webhook == f"{hooks.url}?job={event.job_id}"
    # The model streams: its text comes through the relay, not `output` webhooks.
    assert prediction.events == {"start", "completed"}
    # What was left of the job type's deadline went along as `Cancel-After` (rounded up to
    # whole seconds): never more than the deadline, never less than what was left when the
    # simulator took the create (one host, one clock; bounded by order, not by speed).
    created_at = datetime.fromisoformat(audited["created_at"])
    deadline = datetime.fromisoformat(audited["deadline"])
    expected = JOB_TYPES["video_outline"].deadline_s
    waited_s = (created_at - event.occurred_at).total_seconds()
    assert expected - waited_s <= (deadline - created_at).total_seconds() <= expected
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "submitted") == 1
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "failed") == 0


async def test_jobs_that_cannot_run_fail_at_once_and_a_cancel_is_acknowledged(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    await start_runner()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    unknown, invalid = job("teleportation"), job("title_generation", topic="   ")
    cancel = JobCancelRequested(job_id=uuid.uuid4(), occurred_at=datetime.now(UTC), user_id="u")
    for event in (unknown, invalid, cancel):
        await publisher.publish(event)

    for event, code in ((unknown, "unknown_job_type"), (invalid, "invalid_input")):
        failed = await wait_event(nats_client, jobs_stream_ready, subjects, "failed", event.job_id)
        assert isinstance(failed, JobFailed)
        assert failed.error.code == code
        assert failed.prediction_id is None
    await eventually(lambda: settled(nats_client, jobs_stream_ready))
    assert sim.creates.started == 0
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "submitted") == 0


async def test_polling_mode_creates_the_prediction_without_a_webhook(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    runner = await start_runner(REPLICATE_WEBHOOK_URL="")
    event = job()
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)

    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    prediction = sim.engine.get(submitted.prediction_id)
    assert prediction is not None
    assert prediction.webhook is None
    assert runner.logged("polling mode") >= 1


# What Replicate answers --------------------------------------------------------------------------


async def test_server_errors_are_retried_until_replicate_answers(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    # A 500 may come after Replicate made the prediction, so each retry first waits out a
    # (here short) binding window; attempts are not limited in this test.
    runner = await start_runner(BINDING_WAIT_S="0.3", MAX_ATTEMPTS="100")
    await sim.configure(apiErrorRate=1)
    event = job()
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)

    # Several attempts, each answered 500, none creating anything or announcing anything.
    await eventually(lambda: sim.creates.started >= 3)
    assert runner.logged("could not create the prediction, will retry") >= 2
    assert (
        await last_event(nats_client, jobs_stream_ready, subjects, "submitted", event.job_id)
        is None
    )
    assert (
        await last_event(nats_client, jobs_stream_ready, subjects, "failed", event.job_id) is None
    )
    assert await sim.audit(event.job_id) == []

    await sim.configure(apiErrorRate=0)
    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    (audited,) = await sim.audit(event.job_id)
    assert audited["id"] == submitted.prediction_id
    await eventually(lambda: settled(nats_client, jobs_stream_ready))


async def test_a_refused_token_keeps_the_job_waiting_for_an_operator(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    wrong = await start_runner(REPLICATE_API_TOKEN="r8_revoked")
    event = job()
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)

    await eventually(lambda: sim.creates.started >= 2)
    assert (
        await last_event(nats_client, jobs_stream_ready, subjects, "failed", event.job_id) is None
    )
    errors = [e for e in wrong.log_lines() if e.get("logger") == "ai_runner.handlers"]
    assert errors
    assert {e["level"] for e in errors} == {"error"}  # not a passing warning: someone must act
    assert "Unauthenticated" in errors[0]["msg"]

    # The operator fixes the token and restarts: the job was kept, and now runs.
    assert await wrong.stop() == 0
    await start_runner()
    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    assert len(await sim.audit(event.job_id)) == 1


async def test_a_request_replicate_refuses_fails_the_job_with_its_detail(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    # The simulator answers 422 to a webhook that is not HTTP(S), as Replicate does.
    await start_runner(REPLICATE_WEBHOOK_URL="ftp://nowhere")
    event = job()
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)

    failed = await wait_event(nats_client, jobs_stream_ready, subjects, "failed", event.job_id)
    assert isinstance(failed, JobFailed)
    assert failed.error.code == "prediction_rejected"
    assert "webhook must be an HTTP(S) URL" in failed.error.message
    await eventually(lambda: settled(nats_client, jobs_stream_ready))
    assert sim.creates.started == 1  # not retried
    assert sim.engine.size == 0
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "submitted") == 0


# Shutdown ----------------------------------------------------------------------------------------


async def test_sigterm_finishes_the_creates_in_flight_and_a_restart_does_the_rest(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    release = sim.creates.hold_creates = asyncio.Event()
    # In the stream before the runner starts, so its first fetch takes all five at once.
    in_flight = [job(topic=f"in flight {n}") for n in range(5)]
    for event in in_flight:
        await publisher.publish(event)
    first = await start_runner()
    await eventually(lambda: sim.creates.started == len(in_flight))

    # Published while the runner waits on Replicate: not fetched before SIGTERM arrives.
    waiting = [job(topic=f"waiting {n}") for n in range(5)]
    for event in waiting:
        await publisher.publish(event)
    # The creates are held until the runner has logged that it is stopping: in flight at
    # SIGTERM by order, not by a pause long enough for the signal to land.
    first.process.signal(signal.SIGTERM)
    await eventually(
        lambda: any(e.get("msg") == "stopping" for e in first.log_lines()),
        what="the runner stopping",
    )
    release.set()
    assert await first.stop() == 0

    async def submitted(event: JobRequested) -> bool:
        found = await last_event(
            nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
        )
        return found is not None

    assert [await submitted(e) for e in in_flight] == [True] * len(in_flight)
    assert [await submitted(e) for e in waiting] == [False] * len(waiting)

    sim.creates.hold_creates = None
    await start_runner()
    for event in waiting:
        await wait_event(nats_client, jobs_stream_ready, subjects, "submitted", event.job_id)
    await eventually(lambda: settled(nats_client, jobs_stream_ready))

    # Each job exactly once: nothing in hand at SIGTERM was abandoned and created again.
    everyone = in_flight + waiting
    assert [len(await sim.audit(e.job_id)) for e in everyone] == [1] * len(everyone)
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "submitted") == 10


# At most one prediction per job ---------------------------------------------------------------


async def started_from_webhook(
    hooks: Receiver, job_id: uuid.UUID, within: float = 10.0
) -> JobStarted:
    """What webhook-ingest would publish for the job's `start` webhook (it is not running in
    these tests: the receiver stands in for it, and the test publishes its event)."""
    found: list[JobStarted] = []

    def arrived() -> bool:
        for request in hooks.received:
            body = json.loads(request.body)
            if f"job={job_id}" in request.query and body["status"] != "starting":
                found.append(
                    JobStarted(
                        job_id=job_id,
                        occurred_at=datetime.now(UTC),
                        prediction_id=body["id"],
                        webhook_id=request.headers["webhook-id"],
                    )
                )
                return True
        return False

    await eventually(arrived, within=within, what="the start webhook")
    return found[0]


async def test_a_runner_killed_after_the_create_leaves_one_prediction_which_is_adopted(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    hooks: Receiver,
    start_runner: StartRunner,
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await sim.configure(latencyS=10)  # started after 1 s
    sim.creates.hold_answers = asyncio.Event()
    # A short ack_wait so the killed runner's message comes back within the test.
    fast = {"CONSUMER_ACK_WAIT_S": "2"}
    first = await start_runner(**fast)
    event = job()
    await publisher.publish(event)

    # The prediction exists at "Replicate", its answer has not reached the runner: kill it.
    await eventually(lambda: sim.engine.size == 1)
    first.kill()
    sim.creates.hold_answers.set()
    sim.creates.hold_answers = None

    second = await start_runner(**fast)
    # The restarted runner finds the job claimed with a create in flight and waits (the
    # default binding window, 30 s), creating nothing, until the start webhook binds it.
    await eventually(lambda: second.logged("waiting") >= 1, within=15)
    assert sim.creates.started == 1
    started = await started_from_webhook(hooks, event.job_id)
    await publisher.publish(started)

    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    assert submitted.prediction_id == started.prediction_id
    await eventually(lambda: settled(nats_client, jobs_stream_ready))
    assert [p["id"] for p in await sim.audit(event.job_id)] == [started.prediction_id]
    assert sim.creates.started == 1
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "submitted") == 1
    adopted = 'ai_runner_predictions_adopted_total{job_type="script_generation"}'
    assert await second.metric(adopted) == 1
    waited = 'ai_runner_create_retries_total{job_type="script_generation",reason="binding_wait"}'
    assert await second.metric(waited) >= 1
    created = 'ai_runner_predictions_created_total{job_type="script_generation"}'
    assert await second.metric(created) == 0


async def test_a_create_answered_500_after_it_created_is_bound_by_its_start_webhook(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    hooks: Receiver,
    start_runner: StartRunner,
) -> None:
    await sim.configure(latencyS=10, apiErrorRate=1, apiErrorAfterCreate=True)
    runner = await start_runner()
    event = job()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(event)

    started = await started_from_webhook(hooks, event.job_id)
    assert runner.logged("could not create the prediction, will retry") == 1
    await publisher.publish(started)

    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    assert submitted.prediction_id == started.prediction_id
    await eventually(lambda: settled(nats_client, jobs_stream_ready))
    assert len(await sim.audit(event.job_id)) == 1
    assert sim.creates.started == 1
    assert (
        await last_event(nats_client, jobs_stream_ready, subjects, "failed", event.job_id) is None
    )


# Cancellation ------------------------------------------------------------------------------------


def cancel_of(event: JobRequested) -> JobCancelRequested:
    return JobCancelRequested(job_id=event.job_id, occurred_at=datetime.now(UTC), user_id="u")


async def test_a_cancel_request_cancels_the_running_prediction(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    runner = await start_runner()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    event = job()
    await publisher.publish(event)
    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)

    await publisher.publish(cancel_of(event))

    async def canceled() -> bool:
        (audited,) = await sim.audit(event.job_id)
        return bool(audited["status"] == "canceled")

    await eventually(canceled)
    await eventually(lambda: settled(nats_client, jobs_stream_ready))
    assert len(await sim.audit(event.job_id)) == 1
    stage = (
        'ai_runner_cancellations_total{job_type="script_generation",stage="prediction_canceled"}'
    )
    assert await runner.metric(stage) == 1


async def test_a_job_canceled_before_the_runner_took_it_never_gets_a_prediction(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    runner = await start_runner()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    event = job()
    # The cancel is handled first (a `requested` that reaches the runner late, e.g.
    # redelivered); both in one batch would race, and the loser's prediction is canceled.
    # Waiting for the handler's count, not the consumer's: a consumer learns of a new message
    # a moment after the publish is acknowledged, so "nothing pending" can come before it.
    await publisher.publish(cancel_of(event))
    handled = 'ai_runner_cancellations_total{job_type="unknown",stage="before_creation"}'
    await eventually(lambda: _counted(runner, handled))
    await eventually(lambda: settled(nats_client, jobs_stream_ready, "ai-runner-cancels"))
    await publisher.publish(event)
    await eventually(lambda: settled(nats_client, jobs_stream_ready))

    assert sim.creates.started == 0
    assert await sim.audit(event.job_id) == []
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "submitted") == 0


async def _counted(runner: RunnerProcess, sample: str) -> bool:
    return await runner.metric(sample) == 1


# Attempts and Replicate's limits -----------------------------------------------------------------


async def test_attempts_run_out_and_the_job_fails_with_the_last_error(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    await sim.configure(apiErrorRate=1)
    await start_runner(BINDING_WAIT_S="0.2", MAX_ATTEMPTS="3")
    event = job()
    await EventPublisher(nats_client.jetstream(), subjects).publish(event)

    failed = await wait_event(
        nats_client, jobs_stream_ready, subjects, "failed", event.job_id, within=15
    )
    assert isinstance(failed, JobFailed)
    assert failed.error.code == "attempts_exhausted"
    assert "Simulated API error" in failed.error.message
    await eventually(lambda: settled(nats_client, jobs_stream_ready))
    assert sim.creates.started == 3


async def test_a_throttled_create_waits_as_long_as_replicate_says(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    await sim.configure(createRateLimitPerMinute=1)
    runner = await start_runner()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    first, second = job(topic="first"), job(topic="second")
    await publisher.publish(first)
    await wait_event(nats_client, jobs_stream_ready, subjects, "submitted", first.job_id)
    await publisher.publish(second)

    await eventually(lambda: runner.logged("Replicate throttled the create") >= 1)
    (line,) = [e for e in runner.log_lines() if "throttled the create" in str(e.get("msg"))]

    # The simulator's window is 60 s from the first creation, which came after the first
    # job's event: what is left of it now, give or take the whole second it is rounded to
    # (bounded by the clock read here, however slow the machine).
    def left_of_the_window() -> float:
        return 60 - (datetime.now(UTC) - first.occurred_at).total_seconds()

    waiting = re.search(r"waiting (\d+)s", line["msg"])
    assert waiting is not None
    assert left_of_the_window() - 1 <= int(waiting[1]) <= 60

    # It waits: the consumer loop puts the message back with Replicate's delay (its "not yet"
    # line says how long; JetStream honouring a nak's delay is runtime/tests/test_consumer.py's
    # to prove), by a barrier rather than watching a few seconds pass. A retry soon would
    # show here as a short delay.
    def put_back() -> list[float]:
        return [
            float(m[1])
            for e in runner.log_lines()
            if e.get("job_id") == str(second.job_id)
            and (m := re.match(r"not yet .*redelivery in ([\d.]+)s", str(e.get("msg"))))
        ]

    await eventually(lambda: bool(put_back()))
    (delay_s,) = put_back()
    assert left_of_the_window() - 1 <= delay_s <= 60, delay_s
    # No second try, no failure, no attempt counted.
    assert sim.creates.started == 2
    assert await sim.audit(second.job_id) == []
    throttled = 'ai_runner_create_retries_total{job_type="script_generation",reason="throttled"}'
    assert await runner.metric(throttled) == 1
    assert (
        await last_event(nats_client, jobs_stream_ready, subjects, "failed", second.job_id) is None
    )


# Reconciling, polling, deadlines, shared limits, orphans (with a real job-store) ----------------


async def job_view(nc: NATS, subjects: Subjects, event: JobRequested) -> JobView | None:
    request = msgspec.json.encode(GetJob(job_id=event.job_id, user_id=event.user_id))
    reply = await nc.request(subjects.get_job, request, timeout=2)
    return msgspec.json.decode(reply.data, type=JobReply).job


async def wait_status(
    nc: NATS, subjects: Subjects, event: JobRequested, within: float = 15.0
) -> JobView:
    """The job once the job-store has it terminal."""
    seen: list[JobView] = []

    async def terminal() -> bool:
        view = await job_view(nc, subjects, event)
        if view is not None:
            seen.append(view)
        return view is not None and view.status in ("succeeded", "failed", "canceled")

    await eventually(terminal, within=within)
    return seen[-1]


async def polled_prediction(
    nc: NATS, stream: StreamSpec, subjects: Subjects, sim: RunningSim, event: JobRequested
) -> dict[str, Any]:
    """The job's prediction as the simulator shows it, found through `job.submitted`: without
    a webhook URL the simulator's audit cannot tell the job."""
    submitted = await last_event(nc, stream, subjects, "submitted", event.job_id)
    assert isinstance(submitted, JobSubmitted)
    response = await sim.http.get(
        f"/v1/predictions/{submitted.prediction_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


async def test_a_lost_webhook_is_reconciled_by_asking_replicate(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    job_store: ServiceProcess,
    start_runner: StartRunner,
) -> None:
    # The webhooks reach only the test's receiver, never webhook-ingest: all of them are lost.
    runner = await start_runner(RECONCILE_AFTER_S="1", RECONCILE_INTERVAL_S="0.3")
    await sim.configure(latencyS=0.5, abortRate=1)
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    aborted = job(topic="aborted")
    await publisher.publish(aborted)
    await wait_event(nats_client, jobs_stream_ready, subjects, "submitted", aborted.job_id)
    await sim.configure(abortRate=0)
    succeeded = job(topic="octopus")
    await publisher.publish(succeeded)

    view = await wait_status(nats_client, subjects, succeeded)
    assert view.status == "succeeded"
    assert view.output is not None
    assert "octopus" in view.output
    completed = await last_event(nats_client, jobs_stream_ready, subjects, "completed", view.job_id)
    assert isinstance(completed, JobCompleted)
    assert completed.webhook_id is None  # learnt by asking, under `completed:<predictionId>`
    # `aborted`, which the replicate package cannot parse, is read and ends per the table.
    view = await wait_status(nats_client, subjects, aborted)
    assert (view.status, view.error and view.error.code) == ("failed", "deadline_exceeded")
    reconciled = 'ai_runner_reconciled_total{job_type="script_generation",outcome="completed"}'
    assert await runner.metric(reconciled) >= 2
    # A round that reads a job again before the job-store applied its end publishes it again
    # under the same message id: the stream keeps one `completed` per prediction.
    assert await events_of_kind(nats_client, jobs_stream_ready, subjects, "completed") == 2


async def test_a_lost_webhook_whose_data_is_removed_before_the_reconciler_reads_it_expires(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    job_store: ServiceProcess,
    start_runner: StartRunner,
    hooks: Receiver,
) -> None:
    # The contract's last table row on a running system: a prediction that succeeded, whose
    # webhook never came, and whose data Replicate removed before anyone read it.
    runner = await start_runner(RECONCILE_AFTER_S="1", RECONCILE_INTERVAL_S="0.3")
    # The prediction ends 0.3 s after its creation and loses its data in the same loop turn;
    # the reconciler first asks a job 1 s after it became `processing` (after the creation),
    # so it can only ever read the prediction with its data removed.
    await sim.configure(latencyS=0.3, dropWebhookRate=1, dataRemovedAfterS=0)
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    expired = job(topic="forgotten")
    await publisher.publish(expired)

    view = await wait_status(nats_client, subjects, expired)
    assert (view.status, view.error and view.error.code) == ("failed", "result_expired")
    assert view.output is None
    (audited,) = await sim.audit(expired.job_id)
    # The prediction itself succeeded; its data was gone before the reconciler asked, no
    # webhook was ever sent, so the job learnt its end from the reconciler alone.
    assert (audited["status"], audited["data_removed"], audited["output"]) == (
        "succeeded",
        True,
        None,
    )
    assert audited["deliveries"] == []
    assert hooks.received == []
    completed = await last_event(
        nats_client, jobs_stream_ready, subjects, "completed", expired.job_id
    )
    assert isinstance(completed, JobCompleted)
    assert (completed.webhook_id, completed.data_removed, completed.output) == (None, True, None)
    reconciled = 'ai_runner_reconciled_total{job_type="script_generation",outcome="completed"}'
    assert await runner.metric(reconciled) >= 1


async def test_polling_mode_runs_jobs_to_every_end_without_any_webhook(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    job_store: ServiceProcess,
    start_runner: StartRunner,
    hooks: Receiver,
) -> None:
    await start_runner(REPLICATE_WEBHOOK_URL="", POLL_MIN_S="0.3", POLL_MAX_S="1")
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await sim.configure(latencyS=1, predictionFailRate=1)
    failing = job(topic="failing")
    await publisher.publish(failing)
    await wait_event(nats_client, jobs_stream_ready, subjects, "submitted", failing.job_id)
    await sim.configure(predictionFailRate=0)
    succeeding = job(topic="tides")
    await publisher.publish(succeeding)
    await wait_event(nats_client, jobs_stream_ready, subjects, "submitted", succeeding.job_id)
    await sim.configure(latencyS=60)
    canceled = job(topic="canceled")
    await publisher.publish(canceled)
    await wait_event(nats_client, jobs_stream_ready, subjects, "submitted", canceled.job_id)
    await publisher.publish(
        JobCancelRequested(job_id=canceled.job_id, occurred_at=datetime.now(UTC), user_id="user-1")
    )

    view = await wait_status(nats_client, subjects, succeeding)
    assert view.status == "succeeded"
    assert view.output is not None
    assert "tides" in view.output
    view = await wait_status(nats_client, subjects, failing)
    assert (view.status, view.error and view.error.code) == ("failed", "prediction_failed")
    view = await wait_status(nats_client, subjects, canceled)
    assert view.status == "canceled"
    for event in (failing, succeeding, canceled):
        shown = await polled_prediction(nats_client, jobs_stream_ready, subjects, sim, event)
        assert sim.engine.get(shown["id"]).webhook is None  # type: ignore[union-attr]
    # Learnt by polling: started as well as completed, and no webhook was ever sent.
    assert isinstance(
        await last_event(nats_client, jobs_stream_ready, subjects, "started", succeeding.job_id),
        JobStarted,
    )
    assert hooks.received == []


async def test_the_jobs_deadline_counts_from_submission_queue_time_included(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    job_store: ServiceProcess,
    start_runner: StartRunner,
) -> None:
    runner = await start_runner(REPLICATE_WEBHOOK_URL="", POLL_MIN_S="0.3", POLL_MAX_S="1")
    deadline_s = JOB_TYPES["title_generation"].deadline_s
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    # Queued past its deadline: it fails without a prediction.
    expired = msgspec.structs.replace(
        job("title_generation"), occurred_at=datetime.now(UTC) - timedelta(seconds=deadline_s + 1)
    )
    # Queued until 6 s are left: its prediction (60 s long) is stopped when they are up.
    late = msgspec.structs.replace(
        job("title_generation"), occurred_at=datetime.now(UTC) - timedelta(seconds=deadline_s - 6)
    )
    await publisher.publish(expired)
    await publisher.publish(late)

    view = await wait_status(nats_client, subjects, expired)
    assert (view.status, view.error and view.error.code) == ("failed", "deadline_exceeded")
    assert (
        await last_event(nats_client, jobs_stream_ready, subjects, "submitted", expired.job_id)
        is None
    )
    view = await wait_status(nats_client, subjects, late, within=20)
    assert (view.status, view.error and view.error.code) == ("failed", "deadline_exceeded")
    audited = await polled_prediction(nats_client, jobs_stream_ready, subjects, sim, late)
    assert audited["status"] == "canceled"
    created_at = datetime.fromisoformat(audited["created_at"])
    assert datetime.fromisoformat(audited["deadline"]) - created_at <= timedelta(seconds=7)
    stage = (
        'ai_runner_deadlines_exceeded_total{job_type="title_generation",stage="before_creation"}'
    )
    assert await runner.metric(stage) == 1


async def test_two_runners_never_create_faster_than_the_shared_limit(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    start_runner: StartRunner,
) -> None:
    # 4 creates in any 1.5 s stand for Replicate's 600 a minute, scaled down to keep this short.
    limit, window_s, jobs = 4, 1.5, 12
    settings = {"CREATIONS_PER_WINDOW": str(limit), "CREATION_WINDOW_S": str(window_s)}
    # The limits bucket made first, as the runners make it but keeping every revision (the
    # runners open an existing bucket as it is), so each create's slot can be read back.
    js = nats_client.jetstream()
    limits = await js.create_key_value(
        KeyValueConfig(bucket=limits_bucket_name(jobs_stream_ready.name), history=64)
    )
    runners = await asyncio.gather(start_runner(**settings), start_runner(**settings))
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    events = [job(topic=f"topic {n}") for n in range(jobs)]
    for event in events:
        await publisher.publish(event)

    async def all_submitted() -> bool:
        count = await events_of_kind(nats_client, jobs_stream_ready, subjects, "submitted")
        return count == jobs

    await eventually(all_submitted, within=30)
    # Judged by the time the shared limiter gave each create its slot, not by when the
    # simulator received the request (`created_at`): that arrival trails the slot by a
    # delay the limiter cannot bound, so five arrivals could fall within 1.5 s while the
    # slots kept the limit. Each revision of the creations key is one slot taken, its last
    # time that slot's (times are appended by compare-and-set, each after reading the one
    # before, on this host's one clock); nothing here depends on how fast anything runs.
    slots = sorted(
        msgspec.json.decode(entry.value or b"[]", type=list[float])[-1]
        for entry in await limits.history(CREATIONS)
        if entry.operation is None
    )
    # Every create the simulator received had a slot, and no slot went without a create.
    simulated = [audited for event in events for audited in await sim.audit(event.job_id)]
    assert len(slots) == len(simulated) == jobs
    busiest = max(sum(1 for t in slots if start <= t < start + window_s) for start in slots)
    assert busiest <= limit
    # Both runners did creates, and waited for the shared limit rather than overrunning it.
    waits = [
        await r.metric('ai_runner_limit_waits_total{job_type="any",limit="creations"}')
        for r in runners
    ]
    assert sum(waits) >= 1
    # Jobs waited in the stream, not in redeliveries.
    info = await nats_client.jetstream().consumer_info(jobs_stream_ready.name, "ai-runner")
    assert (info.num_redelivered or 0) <= jobs // 4


async def test_in_flight_predictions_never_exceed_the_shared_limit(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    job_store: ServiceProcess,
    start_runner: StartRunner,
) -> None:
    settings = {"REPLICATE_WEBHOOK_URL": "", "POLL_MIN_S": "0.2", "POLL_MAX_S": "0.5"}
    await asyncio.gather(
        start_runner(MAX_IN_FLIGHT="2", **settings), start_runner(MAX_IN_FLIGHT="2", **settings)
    )
    await sim.configure(latencyS=0.6)
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    events = [job(topic=f"topic {n}") for n in range(5)]
    for event in events:
        await publisher.publish(event)
    for event in events:
        assert (await wait_status(nats_client, subjects, event, within=30)).status == "succeeded"

    spans = []
    for event in events:
        audited = await polled_prediction(nats_client, jobs_stream_ready, subjects, sim, event)
        spans.append(
            (
                datetime.fromisoformat(audited["created_at"]),
                datetime.fromisoformat(audited["completed_at"]),
            )
        )
    running_at_each_create = [
        sum(1 for start, end in spans if start <= at < end) for at, _ in spans
    ]
    assert max(running_at_each_create) <= 2


async def test_a_prediction_that_starts_for_a_job_bound_to_another_is_canceled(
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    sim: RunningSim,
    hooks: Receiver,
    start_runner: StartRunner,
) -> None:
    runner = await start_runner()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    event = job()
    await publisher.publish(event)
    submitted = await wait_event(
        nats_client, jobs_stream_ready, subjects, "submitted", event.job_id
    )
    assert isinstance(submitted, JobSubmitted)
    # A second prediction for the job, as a create whose answer was lost leaves behind; its
    # `start` webhook names the job.
    response = await sim.http.post(
        f"/v1/models/{MODEL}/predictions",
        json={"input": {"prompt": "x"}, "webhook": f"{hooks.url}?job={event.job_id}"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 201, response.text
    orphan = response.json()["id"]
    await publisher.publish(
        JobStarted(job_id=event.job_id, occurred_at=datetime.now(UTC), prediction_id=orphan)
    )

    async def orphan_canceled() -> bool:
        statuses = {a["id"]: a["status"] for a in await sim.audit(event.job_id)}
        return statuses.get(orphan) == "canceled"

    await eventually(orphan_canceled)
    statuses = {a["id"]: a["status"] for a in await sim.audit(event.job_id)}
    assert statuses[submitted.prediction_id] != "canceled"
    metric = 'ai_runner_orphans_canceled_total{job_type="script_generation"}'
    assert await runner.metric(metric) == 1
