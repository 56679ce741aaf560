"""The steady load: jobs at a fixed rate, spread round-robin over both gateways, each `202`
remembered with the gateway that admitted it."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpx

from jobs_chaos.audit import Accepted

# Above the gateway's worst honest answer time during a NATS restart, below the test's patience.
REQUEST_TIMEOUT_S = 10.0


@dataclass
class Load:
    """What the load generator saw: the admitted jobs and every other answer, by kind."""

    accepted: list[Accepted] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

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
