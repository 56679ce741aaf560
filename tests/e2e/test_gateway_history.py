"""`GET /api/jobs/{jobId}/history` against the whole system, every service a real process: a
finished job's history is every change the job-store applied, oldest first; another user's
job is `404`; pages of one walk it by their cursor; a bad `limit` is `422`, a cursor the
job-store refuses `400`."""

from typing import Any

import httpx

from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

FINISHED = ("requested", "submitted", "started", "completed")


async def finished_job(gateway: httpx.AsyncClient, simulator: httpx.AsyncClient) -> str:
    """A job that ran and succeeded, once its last change is in the job-store's history."""
    await simulator.put("/_sim/config", json={"latencyS": 0.2})
    created = await gateway.post("/api/ideation/generate-titles", json={"topic": "tides"})
    assert created.status_code == 202, created.text
    job_id = str(created.json()["jobId"])

    async def completed() -> bool:
        answer = await gateway.get(f"/api/jobs/{job_id}/history")
        if answer.status_code == 404:
            return False  # the job-store has not consumed the request yet
        assert answer.status_code == 200, answer.text
        return any(e["kind"] == "completed" for e in answer.json()["entries"])

    await eventually(completed, within=20, what=f"job {job_id} completed in its history")
    return job_id


async def test_a_finished_jobs_history_is_every_change_oldest_first(
    stack: Stack, gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    job_id = await finished_job(gateway, simulator)
    answer = await gateway.get(f"/api/jobs/{job_id}/history")
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
    job = (await gateway.get(f"/api/jobs/{job_id}")).json()
    assert entries[-1]["summary"]["predictionId"] == job["predictionId"]
    assert job["version"] == entries[-1]["seq"]

    # Another user's job and an unknown one are the same answer.
    other = {"Authorization": f"Bearer {stack.dev_token('someone-else')}"}
    foreign = await gateway.get(f"/api/jobs/{job_id}/history", headers=other)
    unknown = await gateway.get("/api/jobs/6f1c1c1e-8d3c-4a57-9a53-0c3f1f2a9b10/history")
    for refused in (foreign, unknown):
        assert refused.status_code == 404
        assert refused.json()["type"].endswith("not-found")
    assert (
        await gateway.get(f"/api/jobs/{job_id}/history", headers={"Authorization": ""})
    ).status_code == 401


async def test_pages_of_one_walk_the_history_and_bad_queries_are_refused(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    job_id = await finished_job(gateway, simulator)
    path = f"/api/jobs/{job_id}/history"
    whole = (await gateway.get(path)).json()["entries"]
    walked: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(len(whole) + 1):
        params = {"limit": "1"} if cursor is None else {"limit": "1", "cursor": cursor}
        page = (await gateway.get(path, params=params)).json()
        assert len(page["entries"]) <= 1
        walked += page["entries"]
        cursor = page["nextCursor"]
        assert page["truncated"] == (cursor is not None)
        if cursor is None:
            break
    assert walked == whole

    for limit in ("0", "1001", "ten"):
        refused = await gateway.get(path, params={"limit": limit})
        assert refused.status_code == 422, refused.text
        assert [e["parameter"] for e in refused.json()["errors"]] == ["limit"]
    bad = await gateway.get(path, params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400, bad.text
    assert bad.json()["type"].endswith("invalid-cursor")
