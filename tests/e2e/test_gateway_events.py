"""The event routes of the gateway as a process over real NATS, the real job-store and its
Postgres: the current state first, one `status` per newer change (older ones dropped),
progress, keepalive comments, closing after the terminal state, `Last-Event-ID` and `204`, the
token in the query, the multiplexed stream of one user's jobs only, and a `retry:` hint on
SIGTERM. Jobs are made by publishing their events to the stream the job-store consumes; its
change announcements reach the gateway as in life. Progress (webhook-ingest's) and stale
changes are published on core NATS by the test; a stand-in answers for the job-store only
where a test says why."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobChanged, JobProgress, JobReply, ListJobs
from jobs_proto.events import JobCompleted, JobEvent, JobRequested, JobStarted, JobSubmitted
from jobs_proto.status import FinalPredictionStatus, JobStatus
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher, server_has_all
from jobs_runtime.results import result_store, store_result
from jobs_testkit.processes import ServiceProcess, command_path, until_serving
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.sse import Event, events
from jobs_testkit.waiting import eventually

from .test_gateway_processes import (
    SECRET,
    RunningGateway,
    bearer,
    job_store_double,
    overheard,
    token,
)
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env

KEEPALIVE_S = 0.3
T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
PREDICTION = "p1"
# What a job whose prediction reported no metrics cost.
NO_USAGE = {"predictTimeS": None, "inputTokens": None, "outputTokens": None, "costUsd": 0.0}


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def at(version: int) -> datetime:
    """When the job's change to `version` happened: its n-th event, one second apart."""
    return T0 + timedelta(seconds=version - 1)


@pytest.fixture
def gateway_env(gateway_base_env: dict[str, str]) -> dict[str, str]:
    return {**gateway_base_env, "SSE_KEEPALIVE_S": str(KEEPALIVE_S), "SSE_RETRY_MS": "1500"}


def view(job_id: uuid.UUID, version: int, status: JobStatus, output: str | None = None) -> dict:
    """The job as the events below make it, written out (not read from the job-store)."""
    finished = status in ("succeeded", "failed", "canceled")
    return {
        "jobId": str(job_id),
        "type": "script_generation",
        "status": status,
        "version": version,
        "input": {"topic": "tides"},
        "output": output,
        "error": None,
        "predictionId": PREDICTION if version > 1 else None,
        "createdAt": iso(T0),
        "updatedAt": iso(at(version)),
        "completedAt": iso(at(version)) if finished else None,
        "usage": NO_USAGE if finished else None,
        "cancelRequested": False,
    }


def requested(job_id: uuid.UUID, user_id: str = "alice") -> JobRequested:
    return JobRequested(
        job_id=job_id,
        occurred_at=at(1),
        user_id=user_id,
        job_type="script_generation",
        input={"topic": "tides"},
    )


def submitted(job_id: uuid.UUID) -> JobSubmitted:
    return JobSubmitted(job_id=job_id, occurred_at=at(2), prediction_id=PREDICTION)


def started(job_id: uuid.UUID) -> JobStarted:
    return JobStarted(job_id=job_id, occurred_at=at(3), prediction_id=PREDICTION, webhook_id="w1")


def completed(
    job_id: uuid.UUID,
    status: FinalPredictionStatus = "succeeded",
    output: str | None = None,
    error: str | None = None,
    output_ref: str | None = None,
) -> JobCompleted:
    """The prediction's end, after `submitted`: the job's version 3."""
    return JobCompleted(
        job_id=job_id,
        occurred_at=at(3),
        prediction_id=PREDICTION,
        prediction_status=status,
        output=output,
        output_ref=output_ref,
        error=error,
    )


async def publish(nc: NATS, subjects: Subjects, *changes: JobEvent) -> None:
    """Events as the gateway, the ai-runner and webhook-ingest publish them, for the job-store."""
    publisher = EventPublisher(nc.jetstream(), subjects)
    for event in changes:
        await publisher.publish(event)


async def stored(
    nc: NATS, subjects: Subjects, job_id: uuid.UUID, version: int, user_id: str = "alice"
) -> None:
    """Once the job-store has applied the job's change to `version` (asked directly: a read
    through the gateway would feed its views)."""
    request = msgspec.json.encode(GetJob(job_id=job_id, user_id=user_id))

    async def applied() -> bool:
        reply = await nc.request(subjects.get_job, request, timeout=2)
        job = msgspec.json.decode(reply.data, type=JobReply).job
        return job is not None and job.version >= version

    await eventually(applied, what=f"job {job_id} at version {version} in the job-store")


async def running_job(nc: NATS, subjects: Subjects) -> uuid.UUID:
    """Alice's job, `processing` at version 2 in the job-store."""
    job_id = uuid.uuid4()
    await publish(nc, subjects, requested(job_id), submitted(job_id))
    await stored(nc, subjects, job_id, 2)
    return job_id


async def announce(
    nc: NATS, subjects: Subjects, job: dict, user_id: str = "alice", omitted: bool = False
) -> None:
    """A change as the job-store announces it, published by the test: one no sequence of events
    gives to this job-store (an older version, as another replica's late announcement)."""
    change = msgspec.convert({"userId": user_id, "job": job, "outputOmitted": omitted}, JobChanged)
    await nc.publish(subjects.job_change(change.job.job_id), msgspec.json.encode(change))
    await server_has_all(nc)


async def progress(
    nc: NATS,
    subjects: Subjects,
    job_id: uuid.UUID,
    text: str,
    seq: int,
    prediction_id: str = PREDICTION,
) -> None:
    """Partial output as webhook-ingest sends it; by default from the job's prediction."""
    body = JobProgress(job_id=job_id, output=text, seq=seq, prediction_id=prediction_id)
    await nc.publish(subjects.progress(job_id), msgspec.json.encode(body))
    await server_has_all(nc)


@pytest.fixture
async def http(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


async def next_event(stream: AsyncIterator[Event], skip_comments: bool = True) -> Event:
    async with asyncio.timeout(5):
        async for event in stream:
            if skip_comments and event.comments and not event.data:
                continue
            return event
    raise AssertionError("the stream ended")


async def test_a_job_stream_sends_the_state_then_newer_changes_and_progress_then_closes(
    job_store: ServiceProcess, http: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = await running_job(nats_client, subjects)
    async with http.stream(
        "GET", f"/api/jobs/{job_id}/events", headers=bearer("alice")
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = events(response)
        first = await next_event(stream)
        assert (first.event, first.id, first.json()) == (
            "status",
            "2",
            view(job_id, 2, "processing"),
        )
        # Quiet for longer than the keepalive: a comment line keeps proxies from closing it.
        quiet = await next_event(stream, skip_comments=False)
        assert quiet.comments == ["keepalive"]
        assert not quiet.data
        await announce(nats_client, subjects, view(job_id, 1, "pending"))  # older: dropped
        await progress(nats_client, subjects, job_id, "Once upon", 1)
        await progress(nats_client, subjects, job_id, "Once", 0)  # reordered: dropped
        # Another prediction's output (a second prediction of the job, a forged message): dropped.
        await progress(nats_client, subjects, job_id, "INJECTED", 5, prediction_id="p-other")
        await progress(nats_client, subjects, job_id, "Once upon a time", 2)
        received = [await next_event(stream) for _ in range(2)]
        # Changes and progress come over two subscriptions, whose order between them NATS
        # does not keep: the result is published after the progress was seen, as it is in
        # life (the final webhook follows the output ones).
        await publish(nats_client, subjects, completed(job_id, output="Once upon a time."))
        received.append(await next_event(stream))
        assert [(e.event, e.id) for e in received] == [
            ("progress", None),
            ("progress", None),
            ("status", "3"),
        ]
        assert received[0].json() == {
            "jobId": str(job_id),
            "output": "Once upon",
            "seq": 1,
            "predictionId": PREDICTION,
        }
        assert received[1].json()["output"] == "Once upon a time"
        assert received[2].json() == view(job_id, 3, "succeeded", "Once upon a time.")
        # Closed after the terminal state.
        async with asyncio.timeout(5):
            rest = [e async for e in stream]
        assert all(not e.data for e in rest)


async def test_last_event_id_skips_what_the_client_has_and_a_final_one_is_204(
    job_store: ServiceProcess, http: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    running, finished = uuid.uuid4(), uuid.uuid4()
    await publish(nats_client, subjects, requested(running), submitted(running))
    await publish(
        nats_client,
        subjects,
        requested(finished),
        submitted(finished),
        completed(finished, status="failed", error="the model crashed"),
    )
    await stored(nats_client, subjects, running, 2)
    await stored(nats_client, subjects, finished, 3)
    auth = bearer("alice")
    gone = await http.get(f"/api/jobs/{finished}/events", headers={**auth, "Last-Event-ID": "3"})
    assert gone.status_code == 204
    assert not gone.content
    # Behind on a finished job: its final state, then the end.
    behind = await http.get(f"/api/jobs/{finished}/events", headers={**auth, "Last-Event-ID": "2"})
    assert behind.status_code == 200
    assert "id: 3\n" in behind.text
    assert behind.text.count("event: status") == 1
    async with http.stream(
        "GET", f"/api/jobs/{running}/events", headers={**auth, "Last-Event-ID": "2"}
    ) as response:
        stream = events(response)
        # No wait: the route enters `hub.watch_job` before it answers, so these headers
        # mean it is subscribed (a change missed in between would time out below).
        await publish(nats_client, subjects, started(running))
        event = await next_event(stream)
        # Version 2 was not sent again: the first event is the change.
        assert (event.event, event.id) == ("status", "3")


async def test_the_event_routes_take_the_token_in_the_query_and_404_like_get(
    job_store: ServiceProcess, http: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    finished = uuid.uuid4()
    await publish(
        nats_client,
        subjects,
        requested(finished),
        submitted(finished),
        completed(finished, output="done"),
    )
    await stored(nats_client, subjects, finished, 3)
    url = f"/api/jobs/{finished}/events"
    by_query = await http.get(url, params={"access_token": token("alice")})
    assert by_query.status_code == 200
    assert '"output":"done"' in by_query.text
    unauthenticated = await http.get(url)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == "Bearer"
    assert (await http.get(url, params={"access_token": "nope"})).status_code == 401
    assert (await http.get(url, headers=bearer("bob"))).status_code == 404
    unknown = await http.get(f"/api/jobs/{uuid.uuid4()}/events", headers=bearer("alice"))
    assert unknown.status_code == 404
    not_uuid = await http.get("/api/jobs/42/events", headers=bearer("alice"))
    assert not_uuid.status_code == 404
    # Only the event routes: a GET of the job itself ignores a query token.
    plain = await http.get(f"/api/jobs/{finished}", params={"access_token": token("alice")})
    assert plain.status_code == 401
    # The multiplexed route too.
    async with http.stream(
        "GET", "/api/events", params={"access_token": token("alice")}
    ) as response:
        assert response.status_code == 200
    assert (await http.get("/api/events")).status_code == 401


async def test_the_user_stream_sends_open_jobs_then_every_change_of_that_user_only(
    job_store: ServiceProcess, http: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    open_job = await running_job(nats_client, subjects)
    new_job, others = uuid.uuid4(), uuid.uuid4()
    async with (
        overheard(nats_client, subjects.list_jobs, ListJobs) as listed,
        http.stream("GET", "/api/events", headers=bearer("alice")) as response,
    ):
        assert response.status_code == 200
        stream = events(response)
        first = await next_event(stream)
        assert first.event == "status"
        assert first.json() == view(open_job, 2, "processing")
        assert first.id
        assert first.id.isdigit()
        assert listed[0].user_id == "alice"
        assert set(listed[0].statuses) == {"pending", "processing"}

        await publish(nats_client, subjects, requested(others, user_id="bob"))
        await progress(nats_client, subjects, others, "not yours", 1)
        await publish(nats_client, subjects, requested(new_job))
        received = [await next_event(stream)]
        # Progress names no user: the gateway routes it by the owner its changes named
        # (a job's first change precedes its output by far in life; here, wait for it).
        await progress(nats_client, subjects, new_job, "Hello", 1)
        received.append(await next_event(stream))
        await publish(nats_client, subjects, completed(open_job, output="fin"))
        await announce(nats_client, subjects, view(open_job, 2, "processing"))  # stale
        received.append(await next_event(stream))
        assert [(e.event, e.json()["jobId"]) for e in received] == [
            ("status", str(new_job)),
            ("progress", str(new_job)),
            ("status", str(open_job)),
        ]
        assert received[2].json()["status"] == "succeeded"
        # Positions grow with the changes' times.
        assert int(received[2].id or 0) > int(first.id)
        # It does not close by itself: a keepalive comes next, not the end.
        quiet = await next_event(stream, skip_comments=False)
        assert quiet.comments == ["keepalive"]


async def test_a_change_announced_without_its_output_is_read_again(
    http: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = uuid.uuid4()
    views = {job_id: view(job_id, 2, "processing")}

    def answer(request: GetJob) -> bytes:
        return msgspec.json.encode({"job": views.get(request.job_id)})

    # The double: the real job-store omits an output from its announcement and from its read
    # alike (both over the message size), so no sequence of events gives a read carrying it.
    async with (
        job_store_double(nats_client, subjects, answer),
        http.stream("GET", f"/api/jobs/{job_id}/events", headers=bearer("alice")) as response,
    ):
        stream = events(response)
        assert (await next_event(stream)).id == "2"
        views[job_id] = view(job_id, 3, "succeeded", "a long output")
        await announce(nats_client, subjects, view(job_id, 3, "succeeded"), omitted=True)
        final = await next_event(stream)
        assert final.json()["output"] == "a long output"


async def test_a_get_of_a_job_whose_output_is_too_large_is_413_naming_its_size(
    job_store: ServiceProcess,
    http: httpx.AsyncClient,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> None:
    job_id = uuid.uuid4()
    # Too large for an event and for a reply: stored aside as the relay stores it, and kept
    # whole by the job-store, which then answers the job without it.
    big = "x" * (9 * 1024 * 1024)
    js = nats_client.jetstream()
    ref = await store_result(await result_store(js, jobs_stream_ready.name), PREDICTION, big)
    await publish(
        nats_client,
        subjects,
        requested(job_id),
        submitted(job_id),
        completed(job_id, output_ref=ref),
    )
    await stored(nats_client, subjects, job_id, 3)
    response = await http.get(f"/api/jobs/{job_id}", headers=bearer("alice"))
    assert response.status_code == 413
    body = response.json()
    assert body["type"] == "urn:ai-jobs:problem:output-too-large"
    assert f"{len(big)} bytes" in body["detail"]


@pytest.fixture
def own_gateway(tmp_path: Path, gateway_env: dict[str, str]) -> Iterator[RunningGateway]:
    """A gateway this test stops itself."""
    process = ServiceProcess([command_path("gateway")], gateway_env, tmp_path / "gw.log")
    with process:
        process.wait_http(f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}/readyz")
        yield RunningGateway(f"http://127.0.0.1:{gateway_env['HTTP_PORT']}", process)


async def test_on_sigterm_open_streams_end_with_a_retry_hint(
    job_store: ServiceProcess, own_gateway: RunningGateway, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = await running_job(nats_client, subjects)
    async with (
        httpx.AsyncClient(base_url=own_gateway.url, timeout=10) as client,
        client.stream("GET", f"/api/jobs/{job_id}/events", headers=bearer("alice")) as one,
        client.stream("GET", "/api/events", headers=bearer("alice")) as many,
    ):
        job_stream, user_stream = events(one), events(many)
        assert (await next_event(job_stream)).id == "2"
        # The user stream's first state: its list was answered before the gateway stops.
        assert (await next_event(user_stream)).json()["jobId"] == str(job_id)
        exit_code = asyncio.get_running_loop().run_in_executor(None, own_gateway.process.terminate)
        for stream in (job_stream, user_stream):
            # Read to the end: the loop finishing (and not the timeout) is the gateway closing
            # the stream itself while it drains.
            async with asyncio.timeout(5):
                rest = [e async for e in stream]
            *before, last = rest
            # The hint is the stream's last word, carrying no state of its own: the client
            # keeps what it has and reconnects (with Last-Event-ID) for the rest.
            assert (last.retry, last.data, last.id) == (1500, "", None), rest
            # Before it, at most keepalive comments (one may fall due while the gateway stops):
            # no change and no second hint.
            assert all(e.comments and (e.data, e.id, e.retry) == ("", None, None) for e in before)
        assert await exit_code == 0, own_gateway.process.log


async def test_after_nats_comes_back_streams_are_told_to_reconnect(
    tmp_path: Path, restartable_nats: NatsServer, database_url: str
) -> None:
    """Changes published while the gateway was away from NATS are lost to it: its streams
    end with a `retry:` hint, and the reconnecting clients read the current state."""
    subjects = Subjects("resync.")
    admin_port, http_port = free_port(), free_port()
    env = {
        "NATS_URL": restartable_nats.url,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(admin_port),
        "HTTP_PORT": str(http_port),
        "AUTH_JWT_SECRET": SECRET,
        "SSE_RETRY_MS": "1000",
    }
    store_env = {
        "NATS_URL": restartable_nats.url,
        "SUBJECT_PREFIX": subjects.prefix,
        "DATABASE_URL": database_url,
        "ADMIN_PORT": str(free_port()),
    }
    nc = await nats.connect(restartable_nats.url, reconnect_time_wait=0.2)
    try:
        with (
            ServiceProcess([command_path("gateway")], env, tmp_path / "gw.log") as gateway,
            ServiceProcess(
                [command_path("job-store")], store_env, tmp_path / "job-store.log"
            ) as job_store,
        ):
            gateway.wait_http(f"http://127.0.0.1:{admin_port}/readyz")
            await until_serving(job_store, "postgres", within=20.0)
            job_id = await running_job(nc, subjects)
            async with (
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=20) as api,
                api.stream("GET", f"/api/jobs/{job_id}/events", headers=bearer("alice")) as one,
            ):
                stream = events(one)
                assert (await next_event(stream)).id == "2"
                restartable_nats.restart()
                async with asyncio.timeout(15):
                    hints = [e.retry async for e in stream if e.retry is not None]
                # Spread between one and five times SSE_RETRY_MS.
                assert len(hints) == 1
                assert 1000 <= (hints[0] or 0) <= 5000
            assert gateway.terminate() == 0, gateway.log
            assert job_store.terminate() == 0, job_store.log
    finally:
        await nc.close()


def open_streams(admin_url: str) -> float:
    metrics = httpx.get(f"{admin_url}/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("gateway_event_streams_open "))
    return float(line.split()[1])


async def test_a_client_that_goes_away_is_forgotten_without_an_error(
    job_store: ServiceProcess,
    gateway: RunningGateway,
    gateway_env: dict[str, str],
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    admin = f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}"
    job_id = await running_job(nats_client, subjects)
    for _ in range(3):
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=10) as client,
            client.stream("GET", f"/api/jobs/{job_id}/events", headers=bearer()) as response,
        ):
            assert (await next_event(events(response))).id == "2"
            assert open_streams(admin) >= 1

    async def all_closed() -> bool:
        return open_streams(admin) == 0

    # Noticed at the latest when the next keepalive cannot be written.
    await eventually(all_closed, within=5)
    assert "Traceback" not in gateway.process.log
    assert '"level":"error"' not in gateway.process.log
