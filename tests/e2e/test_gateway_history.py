"""`GET /api/jobs/{jobId}/history` against the whole system, every service a real process: a
finished job's history is every change the job-store applied, oldest first; another user's
job is `404`; pages of one walk it by their cursor; a bad `limit` is `422`, a cursor the
job-store refuses `400`; and a gateway alone, its job-store away or failing, answers `503`."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from jobs_proto.subjects import Subjects
from jobs_runtime.bus import server_has_all
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

from .test_gateway_api import assert_problem
from .test_gateway_processes import RunningGateway, bearer

# The gateway alone as a process, for the faults: it shadows the conftest's `gateway` (a
# client of the whole stack), so the stack's tests use `api` instead.
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

FINISHED = ("requested", "submitted", "started", "completed")


@pytest.fixture
async def api(stack: Stack, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The whole stack's gateway, with the conftest's token."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers) as client:
        yield client


async def finished_job(api: httpx.AsyncClient, simulator: httpx.AsyncClient) -> str:
    """A job that ran and succeeded, once its last change is in the job-store's history."""
    await simulator.put("/_sim/config", json={"latencyS": 0.2})
    created = await api.post("/api/ideation/generate-titles", json={"topic": "tides"})
    assert created.status_code == 202, created.text
    job_id = str(created.json()["jobId"])

    async def completed() -> bool:
        answer = await api.get(f"/api/jobs/{job_id}/history")
        if answer.status_code == 404:
            return False  # the job-store has not consumed the request yet
        assert answer.status_code == 200, answer.text
        return any(e["kind"] == "completed" for e in answer.json()["entries"])

    await eventually(completed, within=20, what=f"job {job_id} completed in its history")
    return job_id


async def test_a_finished_jobs_history_is_every_change_oldest_first(
    stack: Stack, api: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    job_id = await finished_job(api, simulator)
    answer = await api.get(f"/api/jobs/{job_id}/history")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "private, no-store"
    body: dict[str, Any] = answer.json()
    assert (body["truncated"], body["nextCursor"]) == (False, None)
    entries = body["entries"]
    assert tuple(e["kind"] for e in entries) == FINISHED
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert [e["summary"]["to"] for e in entries] == [
        "pending",
        "processing",
        "processing",
        "succeeded",
    ]
    assert entries[0]["source"] == "gateway"
    job = (await api.get(f"/api/jobs/{job_id}")).json()
    assert entries[-1]["summary"]["predictionId"] == job["predictionId"]
    assert job["version"] == entries[-1]["seq"]

    # Another user's job and an unknown one are the same answer.
    other = {"Authorization": f"Bearer {stack.dev_token('someone-else')}"}
    foreign = await api.get(f"/api/jobs/{job_id}/history", headers=other)
    unknown = await api.get("/api/jobs/6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10/history")
    for refused in (foreign, unknown):
        assert refused.status_code == 404
        assert refused.json()["type"].endswith("not-found")
    assert (
        await api.get(f"/api/jobs/{job_id}/history", headers={"Authorization": ""})
    ).status_code == 401


async def test_pages_of_one_walk_the_history_and_bad_queries_are_refused(
    api: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    job_id = await finished_job(api, simulator)
    path = f"/api/jobs/{job_id}/history"
    whole = (await api.get(path)).json()["entries"]
    walked: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(len(whole) + 1):
        params = {"limit": "1"} if cursor is None else {"limit": "1", "cursor": cursor}
        page = (await api.get(path, params=params)).json()
        assert len(page["entries"]) <= 1
        walked += page["entries"]
        cursor = page["nextCursor"]
        assert page["truncated"] == (cursor is not None)
        if cursor is None:
            break
    assert walked == whole

    for limit in ("0", "1001", "ten"):
        refused = await api.get(path, params={"limit": limit})
        assert refused.status_code == 422, refused.text
        assert [e["parameter"] for e in refused.json()["errors"]] == ["limit"]
    bad = await api.get(path, params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400, bad.text
    assert bad.json()["type"].endswith("invalid-cursor")


@asynccontextmanager
async def refusing_history(nats_client: NATS, subjects: Subjects, code: int) -> AsyncIterator[None]:
    """A stand-in for the job-store's `history` endpoint answering every request with the
    error `code`, as the job-store's error replies are sent: the real one cannot be made to
    refuse a valid request on cue."""

    async def respond(msg: Msg) -> None:
        headers = {"Nats-Service-Error-Code": str(code), "Nats-Service-Error": "refused"}
        await nats_client.publish(msg.reply, b"", headers=headers)

    subscription = await nats_client.subscribe(subjects.job_history, cb=respond)
    await server_has_all(nats_client)
    try:
        yield
    finally:
        await subscription.unsubscribe()


async def test_without_the_job_store_or_with_it_failing_a_history_is_503(
    gateway: RunningGateway, nats_client: NATS, subjects: Subjects
) -> None:
    path = f"/api/jobs/{uuid.uuid4()}/history"
    async with httpx.AsyncClient(base_url=gateway.url, headers=bearer("alice")) as api:
        answers = [await api.get(path)]  # no responders at all
        for code in (503, 422):
            # The stand-in: the real job-store cannot be made to refuse a valid request on cue.
            async with refusing_history(nats_client, subjects, code):
                answers.append(await api.get(path))
    for answer in answers:
        assert_problem(answer, 503, "unavailable")
        assert int(answer.headers["retry-after"]) > 0
