"""`jobsctl` against the running system: a finished job's history, prediction and events; a
parked event listed, replayed too early (kept), then replayed and applied; every stream's
health."""

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.api import GetJob, JobReply
from jobs_proto.events import JobCancelRequested, JobEvent, JobRequested, encode_event
from jobs_proto.subjects import MSG_ID_HEADER, Subjects, message_id
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

from .conftest import Jobsctl

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
async def bus(stack: Stack) -> AsyncIterator[NATS]:
    # The test server lets a connection without credentials do anything: this one plays the
    # services' part where the test needs an event they would not publish.
    nc = await nats.connect(stack.nats_url)
    yield nc
    await nc.close()


async def publish(nc: NATS, stack: Stack, event: JobEvent) -> None:
    await nc.jetstream().publish(
        Subjects(stack.subject_prefix).event(event),
        encode_event(event),
        headers={MSG_ID_HEADER: message_id(event)},
        stream=stack.jobs_stream,
    )


async def test_a_finished_job_shows_its_history_prediction_and_events(
    stack: Stack, jobsctl: Jobsctl
) -> None:
    headers = {"Authorization": f"Bearer {stack.dev_token('ops-user')}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as gateway:
        created = await gateway.post(
            "/api/jobs", json={"type": "title_generation", "input": {"topic": "night shifts"}}
        )
        job_id = created.json()["jobId"]

        async def finished() -> bool:
            answer = await gateway.get(f"/api/jobs/{job_id}")
            return bool(answer.json()["status"] == "succeeded")

        await eventually(finished, within=60, what="the job succeeds")

    done = await jobsctl.run("job", job_id, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source"] == "job-store"
    assert report["job"]["status"] == "succeeded"
    assert report["job"]["userId"] == "ops-user"
    kinds = [entry["kind"] for entry in report["history"]]
    assert kinds[0] == "requested"
    assert "completed" in kinds
    [prediction] = report["predictions"]
    assert prediction["predictionId"] == report["job"]["predictionId"]
    assert prediction["status"] == "succeeded"
    events = report["events"]
    assert [e["kind"] for e in events][:2] == ["requested", "submitted"]
    assert "completed" in [e["kind"] for e in events]
    assert events[0]["msgId"] == f"requested:{job_id}"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)

    # The same from Postgres directly, and as text for a person.
    direct = await jobsctl.run("job", job_id, DATABASE_URL=stack.database_url)
    assert direct.returncode == 0, direct.stderr
    assert f"job {job_id}  succeeded  (from postgres)" in direct.stdout
    assert prediction["predictionId"] in direct.stdout
    assert "events in the stream (" in direct.stdout


async def test_a_parked_event_is_listed_kept_while_it_cannot_apply_then_replayed(
    stack: Stack, jobsctl: Jobsctl, bus: NATS
) -> None:
    job_id = uuid.uuid4()
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    # A cancel for a job nobody requested, from long enough ago: the job-store parks it.
    await publish(
        bus, stack, JobCancelRequested(job_id=job_id, occurred_at=long_ago, user_id="ops-user")
    )
    parked_stream = f"{stack.jobs_stream}_PARKED"

    async def parked() -> bool:
        try:
            info = await bus.jetstream().stream_info(parked_stream)
        except nats.js.errors.NotFoundError:
            return False
        return info.state.messages > 0

    await eventually(parked, within=30, what="the job-store parks the cancel")

    listed = await jobsctl.run("parked", "--json")
    assert listed.returncode == 0, listed.stderr
    [item] = [i for i in json.loads(listed.stdout)["items"] if str(job_id) in i["body"]]
    assert item["reason"] == "no_such_job"
    assert item["originalSubject"] == f"{stack.subject_prefix}job.cancel_requested.{job_id}"
    assert item["replayable"] is True
    seq = str(item["seq"])

    # Replayed while the job is still unknown: the job-store parks it again under the same id,
    # which the parked stream drops as a duplicate; so the copy must stay.
    early = await jobsctl.run("parked", "--replay", "--seq", seq, "--json")
    assert early.returncode == 1, early.stdout + early.stderr
    assert json.loads(early.stdout)["items"][0]["outcome"] == "kept"
    assert seq in (await jobsctl.run("parked")).stdout

    # Once the job exists (its prediction held at the simulator, so it stays processing), the
    # replay applies and the parked copy goes.
    async with httpx.AsyncClient(base_url=stack.simulator_url) as simulator:
        await simulator.put("/_sim/config", json={"holdWebhooks": True})
        try:
            requested = JobRequested(
                job_id=job_id,
                occurred_at=datetime.now(UTC),
                user_id="ops-user",
                job_type="title_generation",
                input={"topic": "replays"},
            )
            await publish(bus, stack, requested)

            async def known() -> bool:
                answer = await bus.request(
                    Subjects(stack.subject_prefix).get_job,
                    msgspec.json.encode(GetJob(job_id=job_id, user_id="ops-user")),
                    timeout=5,
                )
                return msgspec.json.decode(answer.data, type=JobReply).job is not None

            await eventually(known, within=30, what="the job-store applies the request")
            replayed = await jobsctl.run("parked", "--replay", "--all", "--json")
        finally:
            await simulator.post("/_sim/reset")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    [outcome] = json.loads(replayed.stdout)["items"]
    assert outcome["outcome"] == "replayed"
    shown = json.loads((await jobsctl.run("job", str(job_id), "--json")).stdout)
    assert "cancel_requested" in [entry["kind"] for entry in shown["history"]]
    replays = [e for e in shown["events"] if e["msgId"].startswith(f"replay:{parked_stream}:")]
    assert len(replays) == 2  # the early attempt and this one, each under an id of its own
    left = json.loads((await jobsctl.run("parked", "--json")).stdout)["items"]
    assert [i for i in left if str(job_id) in i["body"]] == []


async def test_health_shows_every_stream_and_the_durable_consumers(
    stack: Stack, jobsctl: Jobsctl, bus: NATS
) -> None:
    js = bus.jetstream()
    names = set()
    for info in await js.streams_info():
        name = info.config.name or ""
        if stack.jobs_stream in name:
            names.add(name)

    text = await jobsctl.run("health")
    assert text.returncode == 0, text.stdout + text.stderr
    for name in names:
        assert f"\n{name}  R1" in f"\n{text.stdout}"
    assert text.stdout.rstrip().endswith("healthy")

    answer = await jobsctl.run("health", "--json")
    report = json.loads(answer.stdout)
    assert report["healthy"] is True
    assert names <= {s["name"] for s in report["streams"]}
    [jobs] = [s for s in report["streams"] if s["name"] == stack.jobs_stream]
    consumers = {c["name"] for c in jobs["consumers"] if c["durable"]}
    assert {"job-store", "ai-runner"} <= consumers


async def test_a_job_whose_webhook_never_came_is_stuck_and_says_so(
    stack: Stack, jobsctl: Jobsctl
) -> None:
    headers = {"Authorization": f"Bearer {stack.dev_token('ops-user')}"}
    async with (
        httpx.AsyncClient(base_url=stack.simulator_url) as simulator,
        httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as gateway,
    ):
        # The prediction ends at once; its webhooks are held, and the reconciler asks only
        # after minutes: the job stays `processing` while Replicate has finished it.
        await simulator.put("/_sim/config", json={"holdWebhooks": True, "latencyS": 0.2})
        try:
            created = await gateway.post(
                "/api/jobs", json={"type": "title_generation", "input": {"topic": "silence"}}
            )
            job_id = created.json()["jobId"]

            async def reported() -> bool:
                answer = await jobsctl.run("stuck", "--older-than", "0.5", "--json")
                assert answer.returncode == 0, answer.stderr
                items = json.loads(answer.stdout)["items"]
                return any(
                    i["job"]["jobId"] == job_id and i["reason"] == "webhook_never_came"
                    for i in items
                )

            await eventually(reported, within=90, what="jobsctl stuck names the job")
            text = await jobsctl.run("stuck", "--older-than", "0.5")
        finally:
            await simulator.post("/_sim/reset")
    assert f"{job_id}  processing  title_generation  user ops-user" in text.stdout
    assert "webhook_never_came: prediction" in text.stdout
