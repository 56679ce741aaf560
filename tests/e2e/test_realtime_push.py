"""Pushed updates through the whole system (every service a real process): the job's event
stream carries its states and partial output from the simulator's webhooks and closes with
the result; the multiplexed stream sees a job created after it opened; and the JavaScript
client's own tests (`node --test clients/js/test/*.test.mjs`) pass against this stack."""

import asyncio
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from jobs_testkit import prerequisites
from jobs_testkit.sse import events
from jobs_testkit.stack import Stack

REPOSITORY = Path(__file__).resolve().parents[2]


async def read_events(
    response: httpx.Response,
    until: Any = None,
    within_s: float = 30.0,
    on_progress: Callable[[], Awaitable[None]] | None = None,
) -> list[tuple[str, str | None, Any]]:
    """(event, id, data) of each event until the stream ends or `until(event)` holds;
    `on_progress` is awaited at the first progress event."""
    received: list[tuple[str, str | None, Any]] = []
    async with asyncio.timeout(within_s):
        async for event in events(response):
            if not event.data:
                continue  # a keepalive comment
            received.append((event.event, event.id, event.json()))
            if event.event == "progress" and on_progress is not None:
                await on_progress()
                on_progress = None
            if until is not None and until(received[-1]):
                break
    return received


async def hold_the_results(simulator: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
    """Webhooks held, so no job ends before the test lets it: the relay reads the prediction's
    text meanwhile (from Replicate's stream, not webhooks), so progress still comes. Without
    the hold, a loaded machine could end a 2 s prediction before its first progress reached
    the stream. Returns the release."""
    await simulator.put("/_sim/config", json={"latencyS": 2, "holdWebhooks": True})

    async def release() -> None:
        await simulator.put("/_sim/config", json={"holdWebhooks": False})

    return release


async def test_a_job_stream_carries_progress_and_closes_with_the_result(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    release = await hold_the_results(simulator)
    created = await gateway.post("/api/ideation/generate-script", json={"topic": "tides"})
    job_id = created.json()["jobId"]
    async with gateway.stream("GET", f"/api/jobs/{job_id}/events", timeout=30) as response:
        assert response.status_code == 200
        received = await read_events(response, on_progress=release)
    statuses = [(i, d) for name, i, d in received if name == "status"]
    progress = [d for name, _, d in received if name == "progress"]
    assert statuses[0][1]["status"] in ("pending", "processing")
    versions = [int(i or 0) for i, _ in statuses]
    assert versions == sorted(set(versions))
    assert [d["version"] for _, d in statuses] == versions
    final = statuses[-1][1]
    assert final["status"] == "succeeded"
    assert progress, "partial output arrived before the result"
    assert [p["seq"] for p in progress] == sorted({p["seq"] for p in progress})
    assert all(final["output"].startswith(p["output"]) for p in progress)
    fetched = (await gateway.get(f"/api/jobs/{job_id}")).json()
    assert fetched == final
    # The client has the final state: nothing more will come.
    again = await gateway.get(
        f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": str(final["version"])}
    )
    assert again.status_code == 204


async def test_the_user_stream_sees_a_job_created_after_it_opened(
    gateway: httpx.AsyncClient, simulator: httpx.AsyncClient
) -> None:
    release = await hold_the_results(simulator)
    async with gateway.stream("GET", "/api/events", timeout=30) as response:
        assert response.status_code == 200
        # No wait: the route enters `hub.watch_user` before it answers, so the `200` means it
        # is subscribed (a job it missed would never reach `succeeded` here, and time out).
        created = await gateway.post(
            "/api/jobs", json={"type": "title_generation", "input": {"topic": "x"}}
        )
        job_id = created.json()["jobId"]

        def finished(event: tuple[str, str | None, Any]) -> bool:
            name, _, data = event
            return name == "status" and data["jobId"] == job_id and data["status"] == "succeeded"

        received = await read_events(response, until=finished, on_progress=release)
    mine = [(name, data) for name, _, data in received if data["jobId"] == job_id]
    assert mine[-1][1]["status"] == "succeeded"
    assert any(name == "progress" for name, _ in mine)


def test_the_javascript_client_against_the_stack(stack: Stack, token: str) -> None:
    environment = {
        **os.environ,
        "GATEWAY_URL": stack.gateway_url,
        "TOKEN": token,
        "SIMULATOR_URL": stack.simulator_url,
    }
    result = subprocess.run(
        # Files named one by one: Node 22 and later no longer read a folder given to --test.
        [
            prerequisites.node().path,
            "--test",
            "--test-reporter=tap",
            *sorted(str(p) for p in (REPOSITORY / "clients/js/test").glob("*.test.mjs")),
        ],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every scenario ran: success with progress, failure, cancel, timeout, abort, 404,
    # polling fallback, the types against /openapi.json, and the reads a "my jobs" page makes
    # (types and prices, a job's cost, history and place in the list, the month's spend).
    assert "# pass 10" in result.stdout, result.stdout
    assert "# fail 0" in result.stdout, result.stdout
