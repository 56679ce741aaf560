"""What a benchmark runs: throwaway NATS and Postgres, the whole system as processes (with the
limits off), the single-process baseline, and the bare endpoint, each with the pids to account."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from jobs_testkit.processes import ServiceProcess
from jobs_testkit.servers import NatsCluster, NatsServer, PostgresServer
from jobs_testkit.servers.base import free_port
from jobs_testkit.stack import Ports, Stack

# Benchmarks measure the system, not the guards in front of it: per-user limits and the global
# creation limit are off, as the issue asks; `429`s would still be counted apart.
LIMITS_OFF: Mapping[str, str] = {
    "USER_REQUESTS_PER_S": "0",
    "USER_MAX_OPEN_JOBS": "0",
    # `sse_memory` opens 10,000 streams as one user to measure what each costs.
    "USER_MAX_STREAMS": "0",
    "MAX_STREAMS": "0",
    "CREATIONS_PER_WINDOW": "0",
    "MAX_IN_FLIGHT": "0",
    # Every webhook comes from the simulator's one address.
    "WEBHOOK_RATE_PER_S": "0",
    # As the deploy manifests run them (deploy/base/config/common.env): a user pays for it.
    "LOG_LEVEL": "INFO",
}
_instances = itertools.count(1)


@dataclass
class Servers:
    """One NATS and one Postgres for the whole benchmark run; each system gets its own stream
    and database on them."""

    workdir: Path
    # More than one: a JetStream cluster of that many nodes (the `replicas` scenario's R3).
    nodes: int = 1
    nats: NatsServer | NatsCluster = field(init=False)
    postgres: PostgresServer = field(init=False)

    def __enter__(self) -> Servers:
        (self.workdir / "postgres").mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(self.workdir / "nats")
        if self.nodes > 1:
            self.nats = NatsCluster(self.workdir / "nats", self.nodes)
        self.nats.start()
        # fsync and full-page writes on, as deployed: every commit pays its flush.
        self.postgres = PostgresServer(self.workdir / "postgres", durable=True)
        self.postgres.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.postgres.close()
        self.nats.close()

    def roots(self) -> dict[str, int]:
        assert self.postgres.pid is not None
        if isinstance(self.nats, NatsCluster):
            pids = {node.name: node.pid for node in self.nats.nodes}
            assert None not in pids.values()
            return {name: pid for name, pid in pids.items() if pid is not None} | {
                "postgres": self.postgres.pid
            }
        assert self.nats.pid is not None
        return {"nats": self.nats.pid, "postgres": self.postgres.pid}

    def new_database(self) -> str:
        name = f"bench_{os.getpid()}_{next(_instances)}"

        async def create() -> None:
            conn = await asyncpg.connect(self.postgres.dsn())
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.postgres.dsn(name)


def _free_ports() -> Ports:
    return Ports(*(free_port() for _ in range(7)))


@dataclass(frozen=True)
class Finished:
    """Jobs by status once enough were terminal (or the wait ran out), and when that was."""

    by_status: dict[str, int]
    at: float
    latency_p50_s: float
    latency_p99_s: float
    timed_out: bool


def wait_for_status(
    dsn: str, table: str, count: int, timeout_s: float, job_ids: Sequence[str] | None = None
) -> Finished:
    """Poll Postgres (twice a second, a cost both designs pay alike) until `count` jobs are
    terminal; the counts by status and when the last one got there. With `job_ids`, only those
    jobs count, so scenarios sharing one system never count each other's jobs."""
    only = "" if job_ids is None else " WHERE id = ANY($1::uuid[])"
    args = () if job_ids is None else (list(job_ids),)

    async def poll() -> Finished:
        conn = await asyncpg.connect(dsn)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                rows = await conn.fetch(
                    f"SELECT status, count(*) AS n FROM {table}{only} GROUP BY 1", *args
                )
                by_status = {r["status"]: r["n"] for r in rows}
                done = sum(n for s, n in by_status.items() if s not in ("pending", "processing"))
                if done >= count or time.monotonic() > deadline:
                    latency = await conn.fetchrow(
                        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,"
                        " percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99 FROM"
                        " (SELECT extract(epoch FROM updated_at - created_at) AS s FROM"
                        f" {table}{only or ' WHERE true'} AND status = 'succeeded') AS t",
                        *args,
                    )
                    assert latency is not None
                    return Finished(
                        by_status=by_status,
                        at=time.monotonic(),
                        latency_p50_s=float(latency["p50"] or 0),
                        latency_p99_s=float(latency["p99"] or 0),
                        timed_out=done < count,
                    )
                await asyncio.sleep(0.5)
        finally:
            await conn.close()

    return asyncio.run(poll())


def set_simulator(url: str, **knobs: object) -> None:
    httpx.put(f"{url}/_sim/config", json=knobs, timeout=10).raise_for_status()


def reset_simulator(url: str, job_s: float) -> None:
    """The simulator as a system is lent: its defaults (held webhooks released), predictions
    streaming for `job_s`."""
    httpx.post(f"{url}/_sim/reset", timeout=10).raise_for_status()
    set_simulator(url, latencyS=job_s)


def simulator_size(url: str) -> int:
    return int(httpx.get(f"{url}/healthz", timeout=10).json()["predictions"])


@dataclass
class EventDrivenSystem:
    """The four services and the simulator as processes, as `make run` starts them."""

    servers: Servers
    log_dir: Path
    overrides: Mapping[str, str] = field(default_factory=dict)
    stack: Stack = field(init=False)
    database_url: str = field(init=False)

    table = "jobs"

    def __enter__(self) -> EventDrivenSystem:
        n = next(_instances)
        self.database_url = self.servers.new_database()
        self.stack = Stack(
            nats_url=self.servers.nats.url,
            database_url=self.database_url,
            ports=_free_ports(),
            subject_prefix=f"bench{n}.",
            jobs_stream=f"BENCH{n}",
            log_dir=self.log_dir,
            overrides={**LIMITS_OFF, **self.overrides},
        )
        # Measured as deployed: each service its own NATS user, checked on every operation.
        self.stack.secure(self.servers.nats)
        try:
            self.stack.start()
            set_simulator(self.stack.simulator_url, latencyS=0.0)
            self.token = self.stack.dev_token("bench-user")
        except BaseException:
            self.stack.stop()  # what did start must not outlive the benchmark
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stack.stop()

    @property
    def simulator_url(self) -> str:
        return self.stack.simulator_url

    @property
    def submit_url(self) -> str:
        return f"{self.stack.gateway_url}/api/jobs"

    def roots(self) -> dict[str, int]:
        return {
            name: process.process.pid for name, process in self.stack.processes.items()
        } | self.servers.roots()


@dataclass
class Baseline:
    """The original single-process design with the same simulator."""

    servers: Servers
    log_dir: Path
    stack: Stack = field(init=False)
    process: ServiceProcess = field(init=False)
    database_url: str = field(init=False)
    port: int = field(init=False)

    table = "async_jobs"
    token = ""

    def __enter__(self) -> Baseline:
        self.database_url = self.servers.new_database()
        self.stack = Stack(
            nats_url=self.servers.nats.url,
            database_url=self.database_url,
            ports=_free_ports(),
            log_dir=self.log_dir,
        )
        self.stack.start_service("replicate-sim")
        try:
            self._start_baseline()
        except BaseException:
            self.stack.stop()
            raise
        return self

    def _start_baseline(self) -> None:
        set_simulator(self.stack.simulator_url, latencyS=0.0)
        self.port = free_port()
        secrets = self.stack.dev_secrets
        env = {
            "BASELINE_PORT": str(self.port),
            "BASELINE_DATABASE_URL": self.database_url,
            "BASELINE_REPLICATE_API_TOKEN": secrets.replicate_token,
            "BASELINE_REPLICATE_BASE_URL": self.stack.simulator_url,
            "BASELINE_WEBHOOK_SECRET": secrets.webhook_secret,
        }
        self.process = ServiceProcess(
            [sys.executable, "-m", "jobs_bench.baseline"], env, self.log_dir / "baseline.log"
        ).start()
        try:
            _wait_listening(self.port, self.process)
        except BaseException:
            self.process.terminate()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.process.terminate()
        self.stack.stop()

    @property
    def simulator_url(self) -> str:
        return self.stack.simulator_url

    @property
    def submit_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/jobs"

    def roots(self) -> dict[str, int]:
        return {
            "baseline": self.process.process.pid,
            "replicate-sim": self.stack.processes["replicate-sim"].process.pid,
            "postgres": self.servers.roots()["postgres"],
        }


@contextlib.contextmanager
def bare_endpoint(log_dir: Path) -> Iterator[tuple[str, int]]:
    """The constant-body Starlette endpoint; its URL and pid."""
    port = free_port()
    process = ServiceProcess(
        [sys.executable, "-m", "jobs_bench.bare", str(port)], {}, log_dir / "bare.log"
    ).start()
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}", process.process.pid
    finally:
        process.terminate()


def _wait_listening(port: int, process: ServiceProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"{process.argv} exited early:\n{process.log[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/jobs/not-a-job", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{process.argv} did not listen on {port}")
