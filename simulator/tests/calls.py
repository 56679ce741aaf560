"""The calls the simulator's tests make again and again: create and read predictions over HTTP,
wait for them to end, read the audit and wait for the webhook sender to go idle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import httpx

from jobs_testkit.receiver import Received, Receiver
from jobs_testkit.waiting import eventually

from .conftest import RunningSimulator

MODEL = "google/gemini-3-pro"
VERSION_ID = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"
CREATE = f"/v1/models/{MODEL}/predictions"
FINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})

T = TypeVar("T")


def when(timestamp: str | None) -> datetime:
    """A timestamp the simulator wrote, read back."""
    assert timestamp is not None
    return datetime.fromisoformat(timestamp)


def new_job() -> str:
    return str(uuid.uuid4())


def hook(receiver: Receiver, job: str) -> str:
    return f"{receiver.url}?job={job}"


def parsed(received: Received) -> dict[str, Any]:
    body = json.loads(received.body)
    assert isinstance(body, dict)
    return body


def _object(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict)
    return body


async def post_create(
    simulator: RunningSimulator,
    webhook: str | None = None,
    events: list[str] | None = None,
    *,
    prompt: str = "tides",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a prediction of the official model; the answer as it came, whatever its status."""
    body: dict[str, Any] = {"input": {"prompt": prompt}}
    if webhook is not None:
        body["webhook"] = webhook
    if events is not None:
        body["webhook_events_filter"] = events
    return await simulator.http.post(CREATE, json=body, headers=headers)


async def create(
    simulator: RunningSimulator,
    webhook: str | None = None,
    events: list[str] | None = None,
    *,
    prompt: str = "tides",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = await post_create(simulator, webhook, events, prompt=prompt, headers=headers)
    return _object(response, 201)


async def create_many(
    simulator: RunningSimulator,
    webhooks: Iterable[str | None],
    events: list[str] | None = None,
    at_once: int = 16,
) -> list[dict[str, Any]]:
    """Several at once, at most `at_once` on the wire; answers them in the order given."""
    gate = asyncio.Semaphore(at_once)

    async def one(webhook: str | None) -> dict[str, Any]:
        async with gate:
            return await create(simulator, webhook, events)

    return list(await asyncio.gather(*(one(w) for w in webhooks)))


async def get(simulator: RunningSimulator, prediction_id: str) -> dict[str, Any]:
    """The prediction as a raw GET shows it."""
    return _object(await simulator.http.get(f"/v1/predictions/{prediction_id}"), 200)


async def read_until(
    read: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float = 10.0,
    what: str = "",
) -> T:
    """Call `read` until `done` holds for what it returns, and answer that."""
    seen: list[T] = []

    async def check() -> bool:
        seen[:] = [await read()]
        return done(seen[0])

    await eventually(check, within, what)
    return seen[0]


async def final(
    simulator: RunningSimulator,
    prediction_id: str,
    *,
    within: float = 10.0,
    gate: asyncio.Semaphore | None = None,
) -> dict[str, Any]:
    """The prediction once it has ended, read with raw GETs (each inside `gate`, if given)."""

    async def read() -> dict[str, Any]:
        async with gate or contextlib.nullcontext():
            return await get(simulator, prediction_id)

    return await read_until(
        read,
        lambda shown: shown["status"] in FINAL,
        within=within,
        what=f"prediction {prediction_id} ends",
    )


async def finals(
    simulator: RunningSimulator, ids: list[str], at_once: int = 16
) -> list[dict[str, Any]]:
    """Each prediction once it has ended, with at most `at_once` GETs on the wire."""
    gate = asyncio.Semaphore(at_once)
    return list(await asyncio.gather(*(final(simulator, i, gate=gate) for i in ids)))


async def audit(simulator: RunningSimulator, job: str) -> list[dict[str, Any]]:
    """What `/_sim/predictions` records for `job`: its predictions and their deliveries."""
    response = await simulator.http.get("/_sim/predictions", params={"job": job})
    results = _object(response, 200)["results"]
    assert isinstance(results, list)
    return results


async def config(simulator: RunningSimulator) -> dict[str, Any]:
    """The knobs as `GET /_sim/config` shows them."""
    return _object(await simulator.http.get("/_sim/config"), 200)


async def quiet(simulator: RunningSimulator) -> None:
    """Until no prediction is running and no webhook is queued, on the wire or waiting for a
    retry: from then on nothing more is sent until something new is created (or, in virtual
    time, until the test moves time on)."""
    sim, sender = simulator.sim, simulator.sim.sender

    def idle() -> bool:
        return (sim.running, sender.queued, sender.in_flight, sender.pending_retries) == (0,) * 4

    await eventually(idle, what="no prediction running, no webhook queued, sent or to retry")


async def until_succeeded(receiver: Receiver, within: float = 10.0) -> None:
    """Until a webhook of a succeeded prediction has arrived."""
    await eventually(
        lambda: any(parsed(r)["status"] == "succeeded" for r in receiver.received),
        within,
        "the completed webhook arrives",
    )
