"""The steady load: jobs at a fixed rate, spread round-robin over both gateways, each `202`
remembered with the gateway that admitted it; for each job a reader of its text (`/output`,
through the other gateway), resuming after every cut as a browser's client does; and for a
fifth of them their user's cancel, at a moment aimed at the job pending, processing or ending.

Each submission carries an `Idempotency-Key`, so a request sent but unanswered (a gateway
stopped or killed mid-request) is sent again, through the other gateway, as a client would,
and the job it made is known. Where the size asks for long predictions, the simulator's
`latencyS` and `tokensPerS` are set just before each job is submitted, so each prediction gets
its own length and writes its text over all of it.

Where asked (`watch_events`), each job also has a watcher of its events
(`/api/jobs/{id}/events`), resuming with `Last-Event-ID` after the server's `retry:` hint as
the JavaScript client does, which keeps the time it spent disconnected."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from dataclasses import dataclass, field

import httpx

from jobs_chaos.audit import Accepted, Cancel
from jobs_testkit.sse import events

# Above the gateway's worst honest answer time during a NATS restart, below the test's patience.
REQUEST_TIMEOUT_S = 10.0
# A reader's pause before it connects again (a refused or cut stream, a `503`).
RECONNECT_S = 0.5
# How long a client keeps sending a submission or a cancel that gets no definitive answer (a
# stopped gateway holds its requests unanswered until it is continued).
PATIENCE_S = 90.0
# Every `CANCEL_EVERY`th job is canceled by its user: a fifth of them.
CANCEL_EVERY = 5
MOMENTS = ("pending", "processing", "end")
# About how many tokens the simulated model writes for a chaos job's prompt.
OUTPUT_TOKENS = 1000


@dataclass
class Reading:
    """What one job's reader got: the text from offset 0, the `done` status, or why it gave
    up; and how often it had to connect."""

    text: str = ""
    status: str | None = None
    error: str | None = None
    connections: int = 0


@dataclass
class Watching:
    """What one job's events watcher got: the versions it saw, the terminal status (None: it
    never saw one) or why it gave up, how often it connected, and the longest time it spent
    between losing a stream and holding the next one."""

    versions: list[int] = field(default_factory=list)
    status: str | None = None
    error: str | None = None
    connections: int = 0
    longest_disconnected_s: float = 0.0
    # The attempts that got no stream, by answer (`503`) or error (`ConnectError`).
    failures: dict[str, int] = field(default_factory=dict)
    # Each time without a stream: wall-clock (lost, back), to set beside the faults' times.
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failures[why] = self.failures.get(why, 0) + 1


@dataclass
class Load:
    """What the load generator saw: the admitted jobs and every other answer, by kind, and a
    reader of each admitted job's text."""

    accepted: list[Accepted] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    readings: dict[str, Reading] = field(default_factory=dict)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    # The events watchers, where the load was asked for them (`watch_events`).
    watchings: dict[str, Watching] = field(default_factory=dict)
    cancels: dict[str, Cancel] = field(default_factory=dict)
    cancelers: list[asyncio.Task[None]] = field(default_factory=list)
    # Submissions sent again after no answer, and what the retries got, by kind.
    resent: dict[str, int] = field(default_factory=dict)
    client: httpx.AsyncClient | None = None
    watch_events: bool = False

    async def cancels_done(self, timeout_s: float) -> None:
        """Until every cancel has its answer or gave up (or `timeout_s`: the rest are cut
        off, without an answer), then the load's client is closed."""
        if self.cancelers:
            _, pending = await asyncio.wait(self.cancelers, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.client is not None:
            await self.client.aclose()

    async def read_all(self, timeout_s: float) -> None:
        """Until every reader has its `done` and every watcher its terminal state (or
        `timeout_s`: the rest are cut off)."""
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


@dataclass(frozen=True)
class Job:
    """One submission of the load: its number, topic, first gateway, the prediction length
    asked of the simulator (None: the scenario's), and when its user cancels it, if at all."""

    n: int
    topic: str
    first: int
    latency_s: float | None = None
    cancel: tuple[str, float] | None = None


def plan(
    count: int,
    gateways: int,
    label: str,
    *,
    latency_s: tuple[float, float] | None,
    base_latency_s: float,
    rng: random.Random,
) -> list[Job]:
    """The load's jobs: every `CANCEL_EVERY`th canceled by its user, the moments turning
    through pending (at once), processing (somewhere in the prediction) and its end (around
    the prediction's expected end, before or after it)."""
    jobs = []
    # Where the turn of moments starts, so that a short load's two cancels differ by scenario.
    turn = rng.randrange(len(MOMENTS))
    for n in range(count):
        latency = None if latency_s is None else round(rng.uniform(*latency_s), 2)
        length = base_latency_s if latency is None else latency
        cancel = None
        if n % CANCEL_EVERY == CANCEL_EVERY // 2:
            moment = MOMENTS[(turn + n // CANCEL_EVERY) % len(MOMENTS)]
            if moment == "pending":
                delay = 0.0
            elif moment == "processing":
                delay = rng.uniform(0.2, 0.8) * length
            else:
                delay = length + rng.uniform(-0.4, 0.3)
            cancel = (moment, max(0.0, delay))
        jobs.append(Job(n, f"chaos {label} job {n}", n % gateways, latency, cancel))
    return jobs


async def set_length(client: httpx.AsyncClient, simulator_url: str, latency_s: float) -> None:
    """The next predictions last `latency_s` and write their text over about all of it."""
    knobs = {"latencyS": latency_s, "tokensPerS": round(OUTPUT_TOKENS / latency_s, 2)}
    # On failure the previous length holds: still a prediction of the planned range.
    with contextlib.suppress(httpx.HTTPError):
        await client.put(f"{simulator_url}/_sim/config", json=knobs)


async def submit_one(
    client: httpx.AsyncClient,
    gateways: list[str],
    job: Job,
    load: Load,
    simulator_url: str | None = None,
) -> None:
    """One job through gateway `job.first`; when a gateway cannot be reached (nothing was
    sent) or does not answer (the job may have been admitted), through the next one with the
    same `Idempotency-Key`, as a load balancer and a careful client do, for up to
    `PATIENCE_S`. A `503` or any other refusal is final: it admitted nothing."""
    if job.latency_s is not None and simulator_url is not None:
        await set_length(client, simulator_url, job.latency_s)
    body = {"type": "script_generation", "input": {"topic": job.topic}}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    deadline = time.monotonic() + PATIENCE_S
    why = "unreachable"
    for attempt in itertools.count():
        if attempt and time.monotonic() > deadline:
            break
        index = (job.first + attempt) % len(gateways)
        if attempt >= len(gateways):
            await asyncio.sleep(RECONNECT_S)
        try:
            response = await client.post(f"{gateways[index]}/api/jobs", json=body, headers=headers)
        except httpx.ConnectError:
            continue
        except httpx.HTTPError as exc:
            # Sent but unanswered: the key makes sending it again safe.
            why = f"unanswered:{type(exc).__name__}"
            load.resent[why] = load.resent.get(why, 0) + 1
            continue
        if response.status_code == 409 and attempt:
            # The key's first request is still in progress at a stopped gateway.
            load.resent["409 in progress"] = load.resent.get("409 in progress", 0) + 1
            continue
        if response.status_code == 202:
            admitted(client, gateways, job, index, response.json()["jobId"], load)
        else:
            load.refuse(str(response.status_code))
        return
    load.refuse(why)


def admitted(
    client: httpx.AsyncClient, gateways: list[str], job: Job, index: int, job_id: str, load: Load
) -> None:
    """Remember the job, start its reader and, if planned, its user's cancel."""
    load.accepted.append(Accepted(job_id, f"gateway-{index}", time.time(), job.topic))
    reading = load.readings[job_id] = Reading()
    # Through the other gateway: the text is every gateway's, not the admitting one's.
    other = (index + 1) % len(gateways)
    auth = client.headers["Authorization"]
    load.readers.append(asyncio.create_task(read_output(gateways[other], auth, job_id, reading)))
    if load.watch_events:
        watching = load.watchings[job_id] = Watching()
        load.readers.append(
            asyncio.create_task(watch_events(gateways[other], auth, job_id, watching))
        )
    if job.cancel is not None:
        moment, delay = job.cancel
        load.cancelers.append(
            asyncio.create_task(cancel_one(client, gateways, other, job_id, moment, delay, load))
        )


async def cancel_one(
    client: httpx.AsyncClient,
    gateways: list[str],
    first: int,
    job_id: str,
    moment: str,
    delay_s: float,
    load: Load,
) -> None:
    """The user's cancel after `delay_s`, sent again (it is idempotent) through either gateway
    until a definitive answer: `202`, `409`, or anything but a `503` or no answer."""
    await asyncio.sleep(delay_s)
    sent = time.time()
    # Sent, so far without an answer: what stays if the wait for one is cut off.
    load.cancels[job_id] = Cancel(sent, None, None, moment)
    deadline = time.monotonic() + PATIENCE_S
    code: int | None = None
    for attempt in itertools.count():
        if time.monotonic() > deadline:
            break
        if attempt >= len(gateways):
            await asyncio.sleep(RECONNECT_S)
        gateway = gateways[(first + attempt) % len(gateways)]
        try:
            response = await client.post(f"{gateway}/api/jobs/{job_id}/cancel")
        except httpx.HTTPError:
            continue
        if response.status_code != 503:
            code = response.status_code
            break
    answered = time.time() if code is not None else None
    load.cancels[job_id] = Cancel(sent, answered, code, moment)


async def run_load(
    gateways: list[str],
    token: str,
    *,
    rate_per_s: float,
    duration_s: float,
    label: str,
    latency_s: tuple[float, float] | None = None,
    base_latency_s: float = 2.0,
    simulator_url: str | None = None,
    seed: int | None = None,
    watch_events: bool = False,
    keep_alive: bool = True,
) -> Load:
    """Submit `rate_per_s` jobs a second for `duration_s`, each on its own schedule so that a
    slow answer never delays the next job; the readers and cancels run on after it returns."""
    load = Load(watch_events=watch_events)
    count = max(1, round(rate_per_s * duration_s))
    interval = 1.0 / rate_per_s
    rng = random.Random(seed)
    jobs = plan(
        count, len(gateways), label, latency_s=latency_s, base_latency_s=base_latency_s, rng=rng
    )
    headers = {"Authorization": f"Bearer {token}"}
    # The readers and cancels outlive this function: the client is closed with the load.
    # Without keep-alive, each request is balanced on its own, as an HTTP ingress does.
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=50 if keep_alive else 0)
    client = httpx.AsyncClient(headers=headers, timeout=REQUEST_TIMEOUT_S, limits=limits)
    load.client = client
    started = time.monotonic()
    tasks = []
    for job in jobs:
        await asyncio.sleep(max(0.0, started + job.n * interval - time.monotonic()))
        tasks.append(asyncio.create_task(submit_one(client, gateways, job, load, simulator_url)))
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


TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})


async def watch_events(gateway: str, auth: str, job_id: str, watching: Watching) -> None:
    """The job's `status` events up to its terminal one, connecting again after any end of
    the stream with `Last-Event-ID` (the version it has), after the server's `retry:` hint
    or `RECONNECT_S`; the caller's timeout ends it. Versions must only grow."""
    version = 0
    lost_at: float | None = None
    async with httpx.AsyncClient(timeout=httpx.Timeout(REQUEST_TIMEOUT_S, read=60.0)) as client:
        while True:
            watching.connections += 1
            headers = {"Authorization": auth}
            if version:
                headers["Last-Event-ID"] = str(version)
            wait_s = RECONNECT_S
            try:
                async with client.stream(
                    "GET", f"{gateway}/api/jobs/{job_id}/events", headers=headers
                ) as response:
                    if response.status_code in (200, 204) and lost_at is not None:
                        gap = time.monotonic() - lost_at
                        watching.longest_disconnected_s = max(watching.longest_disconnected_s, gap)
                        watching.gaps.append((round(time.time() - gap, 3), round(time.time(), 3)))
                        lost_at = None
                    if response.status_code == 204:
                        # The gateway says the client has the terminal state: it must have.
                        if watching.status is None:
                            watching.error = f"204 at version {version}, no terminal state seen"
                        return
                    if response.status_code != 200:
                        watching.fail(str(response.status_code))
                    else:
                        async for event in events(response):
                            if event.retry is not None:
                                wait_s = event.retry / 1000
                            if event.event != "status":
                                continue
                            seen = int(event.id or 0)
                            if seen <= version:
                                watching.error = f"version {seen} after {version}"
                                return
                            version = seen
                            watching.versions.append(seen)
                            status = event.json()["status"]
                            if status in TERMINAL_STATUSES:
                                watching.status = status
                                return
            except httpx.HTTPError as exc:
                watching.fail(type(exc).__name__)
            if lost_at is None:
                lost_at = time.monotonic()
            await asyncio.sleep(wait_s)
