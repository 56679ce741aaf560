"""The steady load: jobs at a fixed rate, spread round-robin over both gateways, each `202`
remembered with the gateway that admitted it; and for each job a reader of its text
(`/output`, through the other gateway), resuming after every cut as a browser's client does."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpx

from jobs_chaos.audit import Accepted
from jobs_testkit.sse import events

# Above the gateway's worst honest answer time during a NATS restart, below the test's patience.
REQUEST_TIMEOUT_S = 10.0
# A reader's pause before it connects again (a refused or cut stream, a `503`).
RECONNECT_S = 0.5


@dataclass
class Reading:
    """What one job's reader got: the text from offset 0, the `done` status, or why it gave
    up; and how often it had to connect."""

    text: str = ""
    status: str | None = None
    error: str | None = None
    connections: int = 0


@dataclass
class Load:
    """What the load generator saw: the admitted jobs and every other answer, by kind, and a
    reader of each admitted job's text."""

    accepted: list[Accepted] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    readings: dict[str, Reading] = field(default_factory=dict)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    async def read_all(self, timeout_s: float) -> None:
        """Until every reader has its `done` (or `timeout_s`: the rest are cut off)."""
        if not self.readers:
            return
        _, pending = await asyncio.wait(self.readers, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


async def submit_one(
    client: httpx.AsyncClient, gateways: list[str], first: int, topic: str, load: Load
) -> None:
    """One job through gateway `first`, or, when it cannot be reached at all (nothing was
    sent, so nothing can have been admitted), through the next one, as a load balancer does."""
    body = {"type": "script_generation", "input": {"topic": topic}}
    for attempt in range(len(gateways)):
        index = (first + attempt) % len(gateways)
        try:
            response = await client.post(f"{gateways[index]}/api/jobs", json=body)
        except httpx.ConnectError:
            continue
        except httpx.HTTPError as exc:
            # Sent but unanswered: the job may exist, but we cannot know its id to audit it.
            load.refuse(f"unanswered:{type(exc).__name__}")
            return
        if response.status_code == 202:
            job_id = response.json()["jobId"]
            load.accepted.append(Accepted(job_id, f"gateway-{index}", time.time()))
            reading = load.readings[job_id] = Reading()
            # Through the other gateway: the text is every gateway's, not the admitting one's.
            other = gateways[(index + 1) % len(gateways)]
            auth = client.headers["Authorization"]
            load.readers.append(asyncio.create_task(read_output(other, auth, job_id, reading)))
        else:
            load.refuse(str(response.status_code))
        return
    load.refuse("unreachable")


async def run_load(
    gateways: list[str], token: str, *, rate_per_s: float, duration_s: float, label: str
) -> Load:
    """Submit `rate_per_s` jobs a second for `duration_s`, each on its own schedule so that a
    slow answer never delays the next job."""
    load = Load()
    count = max(1, round(rate_per_s * duration_s))
    interval = 1.0 / rate_per_s
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=REQUEST_TIMEOUT_S) as client:
        started = time.monotonic()
        tasks = []
        for n, first in zip(range(count), itertools.cycle(range(len(gateways)))):
            await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
            topic = f"chaos {label} job {n}"
            tasks.append(asyncio.create_task(submit_one(client, gateways, first, topic, load)))
        await asyncio.gather(*tasks)
    return load


async def read_output(gateway: str, auth: str, job_id: str, reading: Reading) -> None:
    """The job's text from offset 0 to its `done`, connecting again after any failure with
    `Last-Event-ID` (what it has), as the JavaScript client does; the caller's timeout ends
    it. Each answer's `id:` must be what the client then holds, or the reading is broken."""
    offset = 0
    async with httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, read=60.0)) as client:
        while True:
            reading.connections += 1
            headers = {"Authorization": auth, "Last-Event-ID": str(offset)}
            try:
                async with client.stream(
                    "GET", f"{gateway}/api/jobs/{job_id}/output", headers=headers
                ) as response:
                    if response.status_code == 200:
                        async for event in events(response):
                            if event.event == "output":
                                reading.text += event.json()["text"]
                                offset = len(reading.text)
                                if event.id != str(offset):
                                    reading.error = f"id {event.id} after {offset} characters"
                                    return
                            elif event.event == "done":
                                reading.status = event.json()["status"]
                                return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(RECONNECT_S)
