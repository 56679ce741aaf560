"""The gateway's admission rules against the whole system as processes: an
`Idempotency-Key` answers the same job before and after it ran (one prediction in all), and
`USER_MAX_OPEN_JOBS` counts with the real job-store, making room as jobs finish."""

import uuid

import httpx
import pytest

from .test_job_flow import audit, job_until

MAX_OPEN = 2


@pytest.fixture(scope="module")
def stack_overrides() -> dict[str, str]:
    """The system of `conftest.stack`, with a per-user limit on open jobs."""
    return {"USER_MAX_OPEN_JOBS": str(MAX_OPEN)}


async def test_a_key_answers_the_same_job_before_and_after_it_ran(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    headers = {"Idempotency-Key": f"script-{uuid.uuid4()}"}
    body = {"topic": "idempotent octopus"}
    first = await gateway.post("/api/ideation/generate-script", json=body, headers=headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["jobId"]
    again = await gateway.post("/api/ideation/generate-script", json=body, headers=headers)
    assert (again.status_code, again.content) == (202, first.content)

    done = await job_until(gateway, job_id, {"succeeded"})
    after = await gateway.post("/api/ideation/generate-script", json=body, headers=headers)
    assert (after.status_code, after.content) == (202, first.content)
    assert after.headers["idempotent-replayed"] == "true"
    # Read again and again: a finished job's answer does not change (served from memory).
    for _ in range(3):
        read = await gateway.get(f"/api/jobs/{job_id}")
        assert read.json() == done
    assert len(await audit(simulator, job_id)) == 1


async def test_open_jobs_are_limited_until_some_finish(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 3})
    jobs = []
    for n in range(MAX_OPEN):
        response = await gateway.post("/api/ideation/generate-titles", json={"topic": f"t{n}"})
        assert response.status_code == 202, response.text
        jobs.append(response.json()["jobId"])
    refused = await gateway.post("/api/ideation/generate-titles", json={"topic": "one more"})
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["retry-after"]) >= 1

    for job_id in jobs:
        await job_until(gateway, job_id, {"succeeded"})
    admitted = await gateway.post("/api/ideation/generate-titles", json={"topic": "one more"})
    assert admitted.status_code == 202, admitted.text
    await job_until(gateway, admitted.json()["jobId"], {"succeeded"})
