"""Job tokens on the gateway as a process over real NATS and the real job-store: the owner
gets one (`POST /api/jobs/{jobId}/token`), it reads that job alone (its `GET`, `/events` and
`/output`, in the header or as `access_token`), any other job is `404`, any other route `403`,
and an expired one `401`; and the expiry leeway of session tokens is `AUTH_JWT_LEEWAY_S`."""

import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import jwt
import pytest
from nats.aio.client import Client as NATS

from jobs_proto.subjects import Subjects
from jobs_runtime.bus import EventPublisher
from jobs_testkit import events
from jobs_testkit.processes import ServiceProcess

from .test_gateway_api import assert_problem, at_version
from .test_gateway_list_and_cancel import admitted
from .test_gateway_processes import SECRET, RunningGateway, bearer, random_job_id, token
from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env

JOB_SECRET = "job-token-e2e-secret-0123456789abcdefghij"
TTL_S = 600
LEEWAY_S = 60


@pytest.fixture
def gateway_env(gateway_base_env: dict[str, str]) -> dict[str, str]:
    return {
        **gateway_base_env,
        "JOB_TOKEN_SECRET": JOB_SECRET,
        "JOB_TOKEN_TTL_S": str(TTL_S),
        "AUTH_JWT_LEEWAY_S": str(LEEWAY_S),
    }


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice")) as client:
        yield client


@pytest.fixture
async def anonymous(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


def job_bearer(job_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {job_token}"}


async def finished_job(api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects) -> str:
    """A job of alice's that succeeded with some text, as the gateway shows it."""
    job = await admitted(api, nats_client, subjects)
    publisher = EventPublisher(nats_client.jetstream(), subjects)
    # A prediction of its own: a prediction id names one job.
    prediction = f"pred-{job}"
    await publisher.publish(events.submitted(job, prediction=prediction))
    await publisher.publish(
        events.completed(job, prediction=prediction, output="Tides turn twice a day.")
    )
    await at_version(api, str(job), 3)
    return str(job)


async def job_token_of(api: httpx.AsyncClient, job_id: str) -> str:
    answer = await api.post(f"/api/jobs/{job_id}/token")
    assert answer.status_code == 200, answer.text
    job_token: str = answer.json()["token"]
    return job_token


async def test_the_owner_gets_a_token_that_expires_after_the_configured_time(
    job_store: ServiceProcess, api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = str(await admitted(api, nats_client, subjects))
    before = int(time.time())
    answer = await api.post(f"/api/jobs/{job_id}/token")
    after = int(time.time()) + 1
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {"token", "expiresAt"}
    assert body["expiresAt"].endswith("Z")
    expires_at = datetime.fromisoformat(body["expiresAt"]).timestamp()
    assert before + TTL_S <= expires_at <= after + TTL_S


async def test_another_users_job_an_unknown_one_or_a_bad_id_gets_no_token(
    job_store: ServiceProcess, api: httpx.AsyncClient, nats_client: NATS, subjects: Subjects
) -> None:
    job_id = str(await admitted(api, nats_client, subjects))
    async with httpx.AsyncClient(base_url=str(api.base_url), headers=bearer("bob")) as bob:
        assert_problem(await bob.post(f"/api/jobs/{job_id}/token"), 404, "not-found")
    assert_problem(await api.post(f"/api/jobs/{random_job_id()}/token"), 404, "not-found")
    assert_problem(await api.post("/api/jobs/not-a-uuid/token"), 404, "not-found")
    refused = await api.post(f"/api/jobs/{job_id}/token", headers={"Authorization": "Bearer x"})
    assert_problem(refused, 401, "unauthorized")


async def test_the_token_reads_its_job_its_events_and_its_output(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    job_id = await finished_job(api, nats_client, subjects)
    job_token = await job_token_of(api, job_id)
    owners = await api.get(f"/api/jobs/{job_id}")

    read = await anonymous.get(f"/api/jobs/{job_id}", headers=job_bearer(job_token))
    assert read.status_code == 200, read.text
    assert read.json() == owners.json()
    assert read.json()["output"] == "Tides turn twice a day."

    by_query = await anonymous.get(f"/api/jobs/{job_id}", params={"access_token": job_token})
    assert by_query.status_code == 200, by_query.text
    assert by_query.json() == owners.json()
    # A session token stays in the header on this route: a URL ends up in logs.
    session = await anonymous.get(f"/api/jobs/{job_id}", params={"access_token": token("alice")})
    assert_problem(session, 401, "unauthorized")

    for where in ({"headers": job_bearer(job_token)}, {"params": {"access_token": job_token}}):
        stream = await anonymous.get(f"/api/jobs/{job_id}/events", **where)  # type: ignore[arg-type]
        assert stream.status_code == 200, stream.text
        assert "event: status" in stream.text
        assert '"status":"succeeded"' in stream.text
        output = await anonymous.get(f"/api/jobs/{job_id}/output", **where)  # type: ignore[arg-type]
        assert output.status_code == 200, output.text
        assert '{"text":"Tides turn twice a day."}' in output.text
        assert "event: done" in output.text


async def test_any_other_job_is_not_found_with_it(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    job_id = await finished_job(api, nats_client, subjects)
    other = await finished_job(api, nats_client, subjects)
    job_token = await job_token_of(api, job_id)
    for path in ("", "/events", "/output"):
        for elsewhere in (other, random_job_id(), "not-a-uuid"):
            answer = await anonymous.get(
                f"/api/jobs/{elsewhere}{path}", headers=job_bearer(job_token)
            )
            assert_problem(answer, 404, "not-found")


async def test_any_other_route_is_forbidden_with_it(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    job_id = str(await admitted(api, nats_client, subjects))
    job_token = await job_token_of(api, job_id)
    auth = job_bearer(job_token)
    body = {"type": "video_outline", "input": {"topic": "t"}}
    refused = [
        await anonymous.post("/api/jobs", json=body, headers=auth),
        await anonymous.post("/api/ideation/generate-titles", json={"topic": "t"}, headers=auth),
        await anonymous.get("/api/jobs", headers=auth),
        await anonymous.post(f"/api/jobs/{job_id}/cancel", headers=auth),
        await anonymous.post(f"/api/jobs/{job_id}/token", headers=auth),
        await anonymous.get(f"/api/jobs/{job_id}/history", headers=auth),
        await anonymous.get("/api/usage", headers=auth),
        await anonymous.get("/api/events", headers=auth),
        await anonymous.get("/api/events", params={"access_token": job_token}),
    ]
    for answer in refused:
        assert_problem(answer, 403, "forbidden")
    # Nothing was canceled: the job is as it was.
    assert (await api.get(f"/api/jobs/{job_id}")).json()["status"] == "pending"


async def test_an_expired_or_foreign_token_is_unauthorized(
    job_store: ServiceProcess,
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    nats_client: NATS,
    subjects: Subjects,
) -> None:
    job_id = await finished_job(api, nats_client, subjects)
    claims = {"sub": "alice", "job": job_id, "scope": "job:read"}
    header = {"typ": "job+jwt"}
    expired = jwt.encode(
        {**claims, "exp": int(time.time()) - LEEWAY_S - 5}, JOB_SECRET, "HS256", header
    )
    # A job token signed with the session key, and a session token signed with the job key.
    live = int(time.time()) + 300
    session_signed = jwt.encode({**claims, "exp": live}, SECRET, "HS256", header)
    job_signed_session = jwt.encode({"sub": "alice", "exp": live}, JOB_SECRET, "HS256")
    for bad in (expired, session_signed, job_signed_session):
        for path in ("", "/events", "/output"):
            answer = await anonymous.get(f"/api/jobs/{job_id}{path}", headers=job_bearer(bad))
            assert_problem(answer, 401, "unauthorized")
            assert answer.headers["www-authenticate"].startswith("Bearer")
    answer = await anonymous.get(f"/api/jobs/{job_id}/events", params={"access_token": expired})
    assert_problem(answer, 401, "unauthorized")


async def test_a_session_token_expired_by_more_than_the_leeway_is_unauthorized(
    job_store: ServiceProcess, anonymous: httpx.AsyncClient
) -> None:
    within = token("alice", ttl_s=-(LEEWAY_S - 30))
    past = token("alice", ttl_s=-(LEEWAY_S + 5))
    assert (await anonymous.get("/api/jobs", headers=job_bearer(within))).status_code == 200
    refused = await anonymous.get("/api/jobs", headers=job_bearer(past))
    assert_problem(refused, 401, "unauthorized")
    assert "expired" in refused.json()["detail"]
