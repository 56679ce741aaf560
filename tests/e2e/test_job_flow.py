"""A job through the whole system, every service a real process: gateway, ai-runner, the
simulator, webhook-ingest and job-store over JetStream and Postgres."""

import asyncio
import time
from typing import Any

import httpx

from jobs_testkit.stack import SERVICES, Stack
from jobs_testkit.waiting import eventually


async def job_until(
    gateway: httpx.AsyncClient, job_id: str, statuses: set[str], within: float = 30.0
) -> dict[str, Any]:
    job: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal job
        response = await gateway.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job = response.json()
        return job["status"] in statuses

    await eventually(reached, within=within, what=f"job {job_id} in {sorted(statuses)}")
    return job


async def audit(simulator: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    response = await simulator.get("/_sim/predictions", params={"job": job_id})
    assert response.status_code == 200
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def submit(gateway: httpx.AsyncClient, topic: str = "tides") -> str:
    response = await gateway.post("/api/ideation/generate-script", json={"topic": topic})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "pending"
    assert response.headers["location"] == f"/api/jobs/{body['jobId']}"
    return str(body["jobId"])


async def test_a_job_runs_through_the_whole_system(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 5})
    job_id = await submit(gateway)
    # The 202 came back before the model finished: whatever the simulator knows of this job
    # at this moment is not done yet.
    assert all(p["status"] not in ("succeeded", "failed") for p in await audit(simulator, job_id))
    first = (await gateway.get(f"/api/jobs/{job_id}")).json()
    assert first["status"] in ("pending", "processing")

    processing = await job_until(gateway, job_id, {"processing"})
    assert processing["predictionId"]
    done = await job_until(gateway, job_id, {"succeeded"})
    (prediction,) = await audit(simulator, job_id)
    assert prediction["id"] == done["predictionId"]
    assert prediction["status"] == "succeeded"
    assert done["output"] == "".join(prediction["output"])
    assert done["output"].startswith("Simulated answer to: ")
    assert done["error"] is None
    assert done["completedAt"].endswith("Z")
    assert done["version"] >= 3
    assert done["input"] == {"topic": "tides"}
    assert done["type"] == "script_generation"


async def test_a_failed_prediction_fails_the_job_with_replicates_error(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 0.2, "predictionFailRate": 1})
    job_id = await submit(gateway)
    job = await job_until(gateway, job_id, {"failed", "succeeded", "canceled"})
    (prediction,) = await audit(simulator, job_id)
    assert job["status"] == "failed"
    assert job["error"] == {"code": "prediction_failed", "message": prediction["error"]}


async def test_an_aborted_prediction_fails_the_job_past_its_deadline(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 0.2, "abortRate": 1})
    job_id = await submit(gateway)
    job = await job_until(gateway, job_id, {"failed", "succeeded", "canceled"})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "deadline_exceeded"
    assert (await audit(simulator, job_id))[0]["status"] == "aborted"


async def test_bad_input_at_every_edge_gets_the_contracts_answer(
    stack: Stack, gateway: httpx.AsyncClient
) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        no_token = await anonymous.post("/api/jobs", json={"type": "script_generation"})
        assert no_token.status_code == 401
        assert no_token.headers["www-authenticate"].startswith("Bearer")
        bad = await anonymous.get(
            f"/api/jobs/{'0' * 8}-0000-4000-8000-{'0' * 12}",
            headers={"Authorization": "Bearer not.a.jwt"},
        )
        assert bad.status_code == 401
    cases = [
        (await gateway.post("/api/jobs", json={"type": "poem", "input": {"topic": "x"}}), 422),
        (await gateway.post("/api/jobs", json={"type": "video_outline", "input": {}}), 422),
        (
            await gateway.post(
                "/api/jobs", content=b"{nope", headers={"content-type": "application/json"}
            ),
            400,
        ),
        (await gateway.get("/api/jobs/not-a-uuid"), 404),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == status
    assert cases[0][0].json()["errors"][0]["pointer"] == "/type"
    assert cases[1][0].json()["errors"][0]["pointer"] == "/input/topic"

    async with httpx.AsyncClient() as forger:
        forged = await forger.post(
            f"{stack.webhook_url}?job=00000000-0000-4000-8000-000000000000",
            json={"id": "p1", "status": "succeeded", "output": ["forged"]},
            headers={
                "webhook-id": "msg_forged",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            },
        )
        assert forged.status_code == 401
        assert forged.headers["content-type"].startswith("application/problem+json")
    for name in SERVICES:
        assert stack.processes[name].process.poll() is None, f"{name} died"


async def test_every_service_stops_cleanly_mid_flight_and_the_jobs_still_finish(
    stack: Stack, gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 2})
    jobs = [await submit(gateway, f"topic {i}") for i in range(8)]
    codes = await asyncio.to_thread(
        lambda: {name: stack.stop_service(name) for name in reversed(SERVICES)}
    )
    assert codes == dict.fromkeys(reversed(SERVICES), 0)
    # Down for longer than the predictions take: their final webhooks fail and are retried.
    # Waited on, not slept: every prediction created before the stop has ended and its final
    # webhook has been sent (to a stopped webhook-ingest, unless it ended during the stop).

    async def predictions_ended() -> bool:
        for job_id in jobs:
            for prediction in await audit(simulator, job_id):
                events = {d["event"] for d in prediction["deliveries"]}
                if prediction["status"] not in ("succeeded", "failed", "canceled"):
                    return False
                if "completed" not in events:
                    return False
        return True

    await eventually(predictions_ended, within=30)
    for name in SERVICES:
        await asyncio.to_thread(stack.start_service, name)
    for job_id in jobs:
        job = await job_until(gateway, job_id, {"succeeded", "failed", "canceled"}, within=60)
        assert job["status"] == "succeeded", job
        assert len(await audit(simulator, job_id)) == 1, "a job got a second prediction"


async def test_the_callers_jobs_are_listed_newest_first_and_one_is_canceled_mid_flight(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 5})
    older = await submit(gateway, "older")
    newer = await submit(gateway, "newer")

    async def listed() -> list[str]:
        response = await gateway.get("/api/jobs", params={"limit": 200})
        assert response.status_code == 200, response.text
        return [item["jobId"] for item in response.json()["items"]]

    # The job-store lists a job once it has consumed its request.
    ids: list[str] = []

    async def both_listed() -> bool:
        nonlocal ids
        ids = await listed()
        return {older, newer} <= set(ids)

    await eventually(both_listed, within=30, what="both jobs listed")
    assert ids.index(newer) < ids.index(older)

    await job_until(gateway, newer, {"processing"})
    cancel = await gateway.post(f"/api/jobs/{newer}/cancel")
    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["jobId"] == newer
    canceled = await job_until(gateway, newer, {"canceled"})
    assert canceled["completedAt"]
    assert (await gateway.post(f"/api/jobs/{newer}/cancel")).status_code == 202
    (prediction,) = await audit(simulator, newer)
    assert prediction["status"] == "canceled"

    assert (await job_until(gateway, older, {"succeeded"}))["status"] == "succeeded"
    finished = await gateway.post(f"/api/jobs/{older}/cancel")
    assert finished.status_code == 409, finished.text
