"""The `job-store` command as a real process: consumes events, answers the reads (`get`,
`list`, `stuck`, `history`) over request/reply, announces, and counts in `/metrics`.

The test kit's `job_store` fixture starts it; the process migrates its own database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError

from jobs_proto.api import (
    FindStuckJobs,
    GetJob,
    GetJobHistory,
    JobChanged,
    JobHistory,
    JobPage,
    JobReply,
    ListJobs,
    StuckJobs,
)
from jobs_proto.events import JobCompleted, JobRequested, JobStarted, JobSubmitted
from jobs_proto.stream import StreamSpec, job_store_consumer
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_runtime.results import result_store, store_result
from jobs_testkit.processes import ServiceProcess, command_path, until_serving
from jobs_testkit.servers import free_port
from jobs_testkit.waiting import eventually

OWNER = "user-7"


def _now() -> datetime:
    return datetime.now(UTC)


def _env(
    nats_url: str, database_url: str, stream: StreamSpec, subjects: Subjects
) -> dict[str, str]:
    return {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "JOBS_STREAM": stream.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
    }


async def _ready(process: ServiceProcess) -> None:
    await until_serving(process, "postgres")


async def _all_announced(
    nc: NATS, stream: StreamSpec, subjects: Subjects, announced: list[JobChanged]
) -> None:
    """Until every announcement the job-store will make for the events so far is in
    `announced`, by barriers rather than a pause: its consumer has acked everything (it
    announces before it acks, on one connection), then a marker published after that arrives
    behind any announcement already sent; the marker is taken off again."""

    async def all_acked() -> bool:
        durable = job_store_consumer(subjects).durable
        info = await nc.jetstream().consumer_info(stream.name, durable)
        return (info.num_pending, info.num_ack_pending) == (0, 0)

    await eventually(all_acked)
    last = announced[-1]
    marker = msgspec.structs.replace(
        last, job=msgspec.structs.replace(last.job, job_id=uuid.uuid4())
    )
    await nc.publish(subjects.job_change(marker.job.job_id), msgspec.json.encode(marker))
    await eventually(lambda: bool(announced) and announced[-1] == marker)
    announced.pop()


def _admin(process: ServiceProcess, path: str) -> str:
    return f"http://127.0.0.1:{process.env['ADMIN_PORT']}{path}"


async def _get(nc: NATS, subjects: Subjects, job_id: uuid.UUID, user: str = OWNER) -> JobReply:
    request = msgspec.json.encode(GetJob(job_id=job_id, user_id=user))
    reply = await nc.request(subjects.get_job, request, timeout=2)
    return msgspec.json.decode(reply.data, type=JobReply)


async def test_it_records_a_run_answers_reads_and_announces_each_change(
    job_store: ServiceProcess,
    jobs_stream_ready: StreamSpec,
    nats_client: NATS,
    subjects: Subjects,
    announced: list[JobChanged],
) -> None:
    job = uuid.uuid4()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    for event in (
        JobRequested(
            job_id=job,
            occurred_at=_now(),
            user_id=OWNER,
            job_type="title_generation",
            input={"topic": "tides"},
        ),
        JobSubmitted(job_id=job, occurred_at=_now(), prediction_id="p-1"),
        JobStarted(job_id=job, occurred_at=_now(), prediction_id="p-1", webhook_id="w-1"),
        JobCompleted(
            job_id=job,
            occurred_at=_now(),
            prediction_id="p-1",
            prediction_status="succeeded",
            output="Tides, explained",
            webhook_id="w-2",
        ),
    ):
        await publisher.publish(event)

    async def succeeded() -> bool:
        reply = await _get(nats_client, subjects, job)
        return reply.job is not None and reply.job.status == "succeeded"

    await eventually(succeeded)
    view = (await _get(nats_client, subjects, job)).job
    assert view is not None
    assert (view.version, view.output, view.prediction_id, view.type) == (
        4,
        "Tides, explained",
        "p-1",
        "title_generation",
    )

    # One announcement per change, in order, each the job's committed state.
    await eventually(lambda: len(announced) >= 4)
    await _all_announced(nats_client, jobs_stream_ready, subjects, announced)
    assert [(c.job.version, c.job.status) for c in announced] == [
        (1, "pending"),
        (2, "processing"),
        (3, "processing"),
        (4, "succeeded"),
    ]
    assert announced[-1] == JobChanged(user_id=OWNER, job=view)

    # Another user's job and an unknown job look alike: null.
    assert (await _get(nats_client, subjects, job, user="someone-else")).job is None
    assert (await _get(nats_client, subjects, uuid.uuid4())).job is None

    async with httpx.AsyncClient() as http:
        ready = await http.get(_admin(job_store, "/readyz"))
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": "ok", "postgres": "ok"}

    assert await asyncio.to_thread(job_store.terminate) == 0, job_store.log
    assert '"msg":"stopped"' in job_store.log


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"jobId": "not-a-uuid", "userId": "u"}', b"", b'{"userId": "u"}'],
)
async def test_a_malformed_request_gets_an_error_reply_and_service_goes_on(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects, body: bytes
) -> None:
    reply = await nats_client.request(subjects.get_job, body, timeout=2)
    assert reply.headers is not None
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert reply.headers["Nats-Service-Error"].startswith("not a GetJob request")
    assert (await _get(nats_client, subjects, uuid.uuid4())).job is None
    assert job_store.process.poll() is None


async def test_an_event_ahead_of_its_request_is_applied_soon_after_it(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    job = uuid.uuid4()
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    await publisher.publish(JobSubmitted(job_id=job, occurred_at=_now(), prediction_id="p-9"))

    def deferred() -> bool:
        # Handled and put off ("not yet", its job unknown) before the request is published.
        return any(
            line.startswith("{") and '"msg":"not yet' in line and str(job) in line
            for line in job_store.log.splitlines()
        )

    await eventually(deferred)
    await publisher.publish(
        JobRequested(
            job_id=job, occurred_at=_now(), user_id=OWNER, job_type="video_outline", input={}
        )
    )

    async def processing() -> bool:
        reply = await _get(nats_client, subjects, job)
        return reply.job is not None and reply.job.status == "processing"

    await eventually(processing, within=5.0)
    view = (await _get(nats_client, subjects, job)).job
    assert view is not None
    assert (view.version, view.prediction_id) == (2, "p-9")


@pytest.mark.parametrize(
    "database_url",
    ["postgresql://postgres:s3cret-pw@127.0.0.1:{port}/jobs", "mysql://nowhere"],
    ids=["postgres-down", "malformed-url"],
)
async def test_without_postgres_it_waits_unready_and_stops_cleanly(
    tmp_path: Path,
    nats_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    database_url: str,
) -> None:
    dsn = database_url.format(port=free_port())
    env = _env(nats_url, dsn, jobs_stream_ready, subjects)
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await asyncio.to_thread(process.wait_http, _admin(process, "/healthz"))
        not_ready = await asyncio.to_thread(
            process.wait_http, _admin(process, "/readyz"), 15.0, 503
        )
        # What is down, never the exception's text (which may hold the DSN).
        assert not_ready.json()["checks"]["postgres"] == "unavailable"
        # Retrying, one line per attempt, instead of crashing.
        await eventually(lambda: process.log.count("postgres not ready") >= 2)
        assert process.process.poll() is None
        assert await asyncio.to_thread(process.terminate, 10.0) == 0, process.log
    assert "s3cret-pw" not in process.log


async def _ask(nc: NATS, subject: str, request: msgspec.Struct) -> bytes:
    reply = await nc.request(subject, msgspec.json.encode(request), timeout=2)
    assert reply.headers is None or "Nats-Service-Error-Code" not in reply.headers, reply.headers
    return reply.data


def _requested(job: uuid.UUID, at: datetime, job_type: str, user: str = OWNER) -> JobRequested:
    return JobRequested(
        job_id=job, occurred_at=at, user_id=user, job_type=job_type, input={"topic": "tides"}
    )


async def test_it_lists_a_users_jobs_page_by_page_with_filters(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    start = _now() - timedelta(hours=1)
    jobs = [uuid.uuid4() for _ in range(5)]
    types = ["title_generation", "video_outline"]
    for i, job in enumerate(jobs):
        await publisher.publish(_requested(job, start + timedelta(seconds=i), types[i % 2]))
    # Two share a creation time: the id breaks the tie, so neither is skipped or repeated.
    twin = uuid.uuid4()
    await publisher.publish(_requested(twin, start + timedelta(seconds=4), "title_generation"))
    await publisher.publish(_requested(uuid.uuid4(), start, "title_generation", user="other"))
    await publisher.publish(JobSubmitted(job_id=jobs[0], occurred_at=_now(), prediction_id="p"))

    async def listed() -> JobPage:
        data = await _ask(nats_client, subjects.list_jobs, ListJobs(user_id=OWNER, limit=200))
        return msgspec.json.decode(data, type=JobPage)

    async def all_in() -> bool:
        page = await listed()
        return len(page.items) == 6 and page.items[-1].status == "processing"

    await eventually(all_in)
    everything = (await listed()).items
    assert everything[-1].job_id == jobs[0]
    assert [i.created_at for i in everything] == sorted(
        (i.created_at for i in everything), reverse=True
    )

    pages: list[JobPage] = []
    query = ListJobs(user_id=OWNER, limit=2)
    while True:
        page = msgspec.json.decode(await _ask(nats_client, subjects.list_jobs, query), type=JobPage)
        pages.append(page)
        if page.next_cursor is None:
            break
        query = msgspec.structs.replace(query, cursor=page.next_cursor)
    assert [len(p.items) for p in pages] == [2, 2, 2]
    assert [i.job_id for p in pages for i in p.items] == [i.job_id for i in everything]

    filtered = ListJobs(user_id=OWNER, types=["video_outline"], statuses=["pending"])
    page = msgspec.json.decode(await _ask(nats_client, subjects.list_jobs, filtered), type=JobPage)
    assert {i.job_id for i in page.items} == {jobs[1], jobs[3]}
    assert page.next_cursor is None
    # The summaries carry no input or output.
    raw = await _ask(nats_client, subjects.list_jobs, ListJobs(user_id=OWNER))
    assert b'"input"' not in raw
    assert b'"output"' not in raw


@pytest.mark.parametrize(
    ("subject", "body", "code"),
    [
        ("list_jobs", b'{"userId": "u", "cursor": "garbage"}', "400"),
        ("list_jobs", b'{"userId": "u", "limit": 0}', "422"),
        ("list_jobs", b'{"userId": "u", "limit": 201}', "422"),
        ("list_jobs", b'{"userId": "u", "statuses": ["sleeping"]}', "422"),
        ("stuck_jobs", b'{"olderThanS": 0}', "422"),
        ("job_history", b'{"jobId": "nope", "userId": "u"}', "422"),
    ],
)
async def test_a_bad_read_gets_the_documented_error_code(
    job_store: ServiceProcess,
    nats_client: NATS,
    subjects: Subjects,
    subject: str,
    body: bytes,
    code: str,
) -> None:
    reply = await nats_client.request(getattr(subjects, subject), body, timeout=2)
    assert reply.headers is not None
    assert reply.headers["Nats-Service-Error-Code"] == code
    assert job_store.process.poll() is None


async def test_a_cursor_from_other_filters_is_refused(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    for _ in range(2):
        await publisher.publish(_requested(uuid.uuid4(), _now(), "title_generation"))

    async def two() -> bool:
        data = await _ask(nats_client, subjects.list_jobs, ListJobs(user_id=OWNER))
        return len(msgspec.json.decode(data, type=JobPage).items) == 2

    await eventually(two)
    data = await _ask(nats_client, subjects.list_jobs, ListJobs(user_id=OWNER, limit=1))
    cursor = msgspec.json.decode(data, type=JobPage).next_cursor
    assert cursor is not None
    other = ListJobs(user_id=OWNER, limit=1, cursor=cursor, types=["title_generation"])
    reply = await nats_client.request(subjects.list_jobs, msgspec.json.encode(other), timeout=2)
    assert reply.headers is not None
    assert reply.headers["Nats-Service-Error-Code"] == "400"
    assert reply.headers["Nats-Service-Error"].startswith("bad_cursor")


async def test_it_finds_stuck_jobs_and_serves_history_and_metrics(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    publisher = EventPublisher(js, subjects)
    long_ago = _now() - timedelta(hours=2)
    stuck, older, fresh, done = (uuid.uuid4() for _ in range(4))
    for job, at in ((stuck, long_ago), (older, long_ago - timedelta(hours=1)), (fresh, _now())):
        await publisher.publish(_requested(job, at, "script_generation"))
        await publisher.publish(
            JobSubmitted(job_id=job, occurred_at=at, prediction_id=f"p-{job}", attempt=2)
        )
    # A finished job's output too large for an event: stored aside, loaded by the store.
    await publisher.publish(_requested(done, long_ago, "script_generation"))
    big = "x" * (9 * 1024 * 1024)
    jobs_bucket = await result_store(js, job_store.env["JOBS_STREAM"])
    ref = await store_result(jobs_bucket, f"p-{done}", big)
    await publisher.publish(
        JobCompleted(
            job_id=done,
            occurred_at=_now(),
            prediction_id=f"p-{done}",
            prediction_status="succeeded",
            output_ref=ref,
            webhook_id="w-big",
        )
    )

    async def stuck_now() -> StuckJobs:
        data = await _ask(nats_client, subjects.stuck_jobs, FindStuckJobs(older_than_s=600))
        return msgspec.json.decode(data, type=StuckJobs)

    await eventually(lambda: _has_two(stuck_now))
    found = await stuck_now()
    assert [i.job_id for i in found.items] == [older, stuck]  # oldest first
    assert not found.truncated
    assert (found.items[1].prediction_id, found.items[1].attempts) == (f"p-{stuck}", 2)
    assert found.items[1].processing_since == long_ago
    assert found.items[1].deadline_at == long_ago + timedelta(seconds=600)
    one = await _ask(nats_client, subjects.stuck_jobs, FindStuckJobs(older_than_s=600, limit=1))
    bounded = msgspec.json.decode(one, type=StuckJobs)
    assert ([i.job_id for i in bounded.items], bounded.truncated) == ([older], True)

    history = msgspec.json.decode(
        await _ask(nats_client, subjects.job_history, GetJobHistory(job_id=stuck, user_id=OWNER)),
        type=JobHistory,
    )
    assert history.entries is not None
    assert [(e.seq, e.kind, e.source, e.summary["to"]) for e in history.entries] == [
        (1, "requested", "gateway", "pending"),
        (2, "submitted", "ai-runner", "processing"),
    ]
    assert history.entries[1].message_id == f"submitted:{stuck}:p-{stuck}"
    foreign = GetJobHistory(job_id=stuck, user_id="someone-else")
    assert (
        msgspec.json.decode(
            await _ask(nats_client, subjects.job_history, foreign), type=JobHistory
        ).entries
        is None
    )

    async def big_done() -> bool:
        data = await _ask(
            nats_client, subjects.job_history, GetJobHistory(job_id=done, user_id=OWNER)
        )
        entries = msgspec.json.decode(data, type=JobHistory).entries
        return entries is not None and len(entries) == 2

    await eventually(big_done)
    # The job holds the whole output, too large for one reply: `get` answers without it and
    # says so, instead of an error.
    cut = msgspec.json.decode(
        await _ask(nats_client, subjects.get_job, GetJob(job_id=done, user_id=OWNER)),
        type=JobReply,
    )
    assert cut.job is not None
    assert (cut.job.status, cut.job.output, cut.output_omitted, cut.output_bytes) == (
        "succeeded",
        None,
        True,
        len(big),
    )
    # The row itself holds all of it.
    async with httpx.AsyncClient() as http:
        assert (await http.get(_admin(job_store, "/readyz"))).status_code == 200
    page = msgspec.json.decode(
        await _ask(
            nats_client, subjects.list_jobs, ListJobs(user_id=OWNER, statuses=["succeeded"])
        ),
        type=JobPage,
    )
    assert [i.job_id for i in page.items] == [done]

    async with httpx.AsyncClient() as http:
        metrics = (await http.get(_admin(job_store, "/metrics"))).text
    assert 'job_store_events_total{kind="submitted",outcome="changed"} 3.0' in metrics
    assert 'job_store_events_total{kind="completed",outcome="changed"} 1.0' in metrics
    assert "job_store_apply_seconds_bucket" in metrics
    assert "job_store_waits_total" in metrics


async def _has_two(stuck_now: Callable[[], Awaitable[StuckJobs]]) -> bool:
    return len((await stuck_now()).items) == 2


async def test_what_can_never_be_applied_is_parked_and_the_consumer_goes_on(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    publisher = EventPublisher(js, subjects)
    stream = job_store.env["JOBS_STREAM"]
    garbage, mismatched, orphan, fine = (uuid.uuid4() for _ in range(4))
    await js.publish(f"{subjects.prefix}job.submitted.{garbage}", b"{not json", stream=stream)
    await js.publish(f"{subjects.prefix}job.submitted.not-a-uuid", b"{}", stream=stream)
    other = JobSubmitted(job_id=uuid.uuid4(), occurred_at=_now(), prediction_id="p")
    await js.publish(
        f"{subjects.prefix}job.submitted.{mismatched}", msgspec.json.encode(other), stream=stream
    )
    # Its request never came, and it happened two hours ago: it belongs to no job.
    await publisher.publish(
        JobStarted(job_id=orphan, occurred_at=_now() - timedelta(hours=2), prediction_id="p-o")
    )
    await publisher.publish(_requested(fine, _now(), "title_generation"))

    parked = await js.pull_subscribe(f"{subjects.prefix}job_parked.>", stream=f"{stream}_PARKED")
    messages: list[Msg] = []

    async def all_parked() -> bool:
        with contextlib.suppress(NatsTimeoutError):
            messages.extend(await parked.fetch(4 - len(messages), timeout=0.5))
        return len(messages) == 4

    await eventually(all_parked, within=10.0)
    by_reason = {m.headers["Jobs-Park-Reason"]: m for m in messages if m.headers}
    assert set(by_reason) == {"bad_subject", "undecodable", "subject_mismatch", "no_such_job"}
    assert by_reason["undecodable"].data == b"{not json"
    assert by_reason["undecodable"].headers is not None
    assert by_reason["undecodable"].headers["Jobs-Original-Subject"].endswith(str(garbage))
    assert by_reason["no_such_job"].subject == f"{subjects.prefix}job_parked.no_such_job"

    async def fine_applied() -> bool:
        # Parking the others does not wait for it: it may come in a later batch.
        return (await _get(nats_client, subjects, fine)).job is not None

    await eventually(fine_applied)

    async with httpx.AsyncClient() as http:
        metrics = (await http.get(_admin(job_store, "/metrics"))).text
    for reason in ("bad_subject", "undecodable", "subject_mismatch", "no_such_job"):
        assert f'job_store_parked_total{{reason="{reason}"}} 1.0' in metrics
    assert 'job_store_events_total{kind="started",outcome="parked"} 1.0' in metrics

    # Settled, not left pending: nothing comes back for the job-store's consumer.
    async def settled() -> bool:
        info = await js.consumer_info(stream, "job-store")
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(settled, within=5.0)


async def test_news_of_another_prediction_is_parked_never_applied(
    job_store: ServiceProcess, nats_client: NATS, subjects: Subjects
) -> None:
    """A job bound to its prediction takes `started` and `completed` of no other: they are
    parked with their reason, counted, and the job ends with its own prediction's result."""
    js = nats_client.jetstream()
    publisher = EventPublisher(js, subjects)
    stream = job_store.env["JOBS_STREAM"]
    job = uuid.uuid4()
    await publisher.publish(_requested(job, _now(), "title_generation"))
    await publisher.publish(JobSubmitted(job_id=job, occurred_at=_now(), prediction_id="p-own"))
    foreign_start = JobStarted(job_id=job, occurred_at=_now(), prediction_id="p-other")
    foreign_end = JobCompleted(
        job_id=job,
        occurred_at=_now(),
        prediction_id="p-other",
        prediction_status="succeeded",
        output="INJECTED",
        webhook_id="msg_other_final",
    )
    await publisher.publish(foreign_start)
    await publisher.publish(foreign_end)

    parked = await js.pull_subscribe(f"{subjects.prefix}job_parked.>", stream=f"{stream}_PARKED")
    messages: list[Msg] = []

    async def both_parked() -> bool:
        with contextlib.suppress(NatsTimeoutError):
            messages.extend(await parked.fetch(2 - len(messages), timeout=0.5))
        return len(messages) == 2

    await eventually(both_parked, within=10.0)
    assert [m.subject for m in messages] == [subjects.parked("other_prediction")] * 2
    assert [msgspec.json.decode(m.data)["predictionId"] for m in messages] == ["p-other"] * 2
    for message in messages:
        assert message.headers is not None
        assert "bound to prediction p-own" in message.headers["Jobs-Park-Detail"]
    reply = await _get(nats_client, subjects, job)
    assert reply.job is not None
    assert (reply.job.status, reply.job.output, reply.job.version) == ("processing", None, 2)

    await publisher.publish(
        JobCompleted(
            job_id=job,
            occurred_at=_now(),
            prediction_id="p-own",
            prediction_status="succeeded",
            output="Own words.",
            webhook_id="msg_own_final",
        )
    )

    async def finished() -> bool:
        found = (await _get(nats_client, subjects, job)).job
        return found is not None and found.status == "succeeded"

    await eventually(finished, within=10.0)
    done = (await _get(nats_client, subjects, job)).job
    assert done is not None
    assert (done.output, done.prediction_id, done.version) == ("Own words.", "p-own", 3)
    history = msgspec.json.decode(
        await _ask(nats_client, subjects.job_history, GetJobHistory(job_id=job, user_id=OWNER)),
        type=JobHistory,
    )
    assert history.entries is not None
    assert [(e.kind, e.summary.get("predictionId")) for e in history.entries] == [
        ("requested", None),
        ("submitted", "p-own"),
        ("completed", "p-own"),
    ]
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(_admin(job_store, "/metrics"))).text
    assert 'job_store_parked_total{reason="other_prediction"} 2.0' in metrics
