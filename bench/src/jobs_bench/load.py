"""The job generator: submits jobs at a fixed rate (or all at once) from a process of its own, so
its CPU is never counted as the system's, and prints what it got back as one JSON line.

`python -m jobs_bench.load URL TOKEN COUNT RATE` (RATE 0: as fast as CONCURRENCY allows).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter

import httpx

CONCURRENCY = 256


async def submit(url: str, token: str, count: int, rate: float) -> dict[str, object]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    # By status code, or by the name of the error when no answer came (`ReadTimeout`, ...).
    statuses: Counter[str] = Counter()
    job_ids: list[str] = []
    slots = asyncio.Semaphore(CONCURRENCY)
    started = time.monotonic()
    # From here: what generating the load costs, not the interpreter's start and imports.
    cpu_started = _own_cpu_s()

    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def one(n: int) -> None:
            body = {"type": "title_generation", "input": {"topic": f"benchmark topic {n}"}}
            try:
                answer = await client.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                return
            finally:
                slots.release()
            statuses[str(answer.status_code)] += 1
            if answer.status_code == 202:
                job_ids.append(answer.json()["jobId"])

        tasks = []
        for n in range(count):
            if rate > 0:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return {
        "statuses": dict(sorted(statuses.items())),
        "accepted": len(job_ids),
        "admitS": time.monotonic() - started,
        "jobIds": job_ids,
        # Its own CPU, so the report can say what the load itself cost.
        "cpuS": _own_cpu_s() - cpu_started,
    }


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    url, token, count, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(submit(url, token, count, rate))), flush=True)


if __name__ == "__main__":
    main()
