"""The system under fault: one throwaway NATS and Postgres, the simulator, and two replicas of
every service as processes on free ports, with the handles to kill, pause and restart each."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import NatsCluster, NatsServer, PostgresServer, free_port
from jobs_testkit.stack import Ports, Stack

SERVICES = ("job-store", "ai-runner", "webhook-ingest", "gateway")
REPLICAS = 2
# What each service's /metrics tells the audit: the first is the work that shows the load
# reached a replica, the rest show that a fault took effect (retries, adoptions, ...).
FAMILIES = {
    "ai-runner": (
        "ai_runner_predictions_created_total",
        "ai_runner_create_retries_total",
        "ai_runner_predictions_adopted_total",
        "ai_runner_orphans_canceled_total",
        "ai_runner_reconciled_total",
        "ai_runner_limit_waits_total",
    ),
    "job-store": ("job_store_events_total", "job_store_waits_total"),
    "webhook-ingest": ("webhook_ingest_webhooks_total",),
    "gateway": ("gateway_jobs_admitted_total",),
}
DATABASE = "chaos"


@dataclass(frozen=True)
class Timing:
    """The services' recovery knobs, shrunk so that a lost webhook or a dead runner is noticed
    within seconds; the audit's idea of "stuck" is derived from the same numbers."""

    reconcile_after_s: float = 5.0
    reconcile_interval_s: float = 1.0
    binding_wait_s: float = 5.0
    ack_wait_s: float = 10.0
    shutdown_grace_s: float = 2.0
    retry_base_s: float = 0.3
    retry_cap_s: float = 4.0

    def environment(self) -> dict[str, str]:
        return {
            "RECONCILE_AFTER_S": str(self.reconcile_after_s),
            "RECONCILE_INTERVAL_S": str(self.reconcile_interval_s),
            "BINDING_WAIT_S": str(self.binding_wait_s),
            "CONSUMER_ACK_WAIT_S": str(self.ack_wait_s),
            "SHUTDOWN_GRACE_S": str(self.shutdown_grace_s),
            "RETRY_BASE_S": str(self.retry_base_s),
            "RETRY_CAP_S": str(self.retry_cap_s),
        }

    @property
    def stuck_after_s(self) -> float:
        """The longest a job may go without a change when nothing is down: a missed webhook
        waits for the reconciler, a lost create answer for the binding wait, an unacked
        message for redelivery, and then some slack for a busy two-core machine."""
        return (
            self.reconcile_after_s
            + self.reconcile_interval_s
            + max(self.binding_wait_s, self.ack_wait_s)
            + 10.0
        )


@dataclass
class Replica:
    """One process of one service, with the ports it was given."""

    service: str
    index: int
    http_port: int | None
    admin_port: int | None
    env: dict[str, str]
    log_path: Path
    process: ServiceProcess | None = None
    # Which pod in the replica's place (a rollout's successor: 1, then 2, ...).
    generation: int = 0

    @property
    def name(self) -> str:
        base = f"{self.service}-{self.index}"
        return f"{base}.{self.generation}" if self.generation else base

    @property
    def ready_url(self) -> str:
        if self.admin_port is None:
            return f"http://127.0.0.1:{self.http_port}/healthz"
        return f"http://127.0.0.1:{self.admin_port}/readyz"

    @property
    def metrics_url(self) -> str | None:
        return None if self.admin_port is None else f"http://127.0.0.1:{self.admin_port}/metrics"

    def start(self, timeout: float = 60.0) -> None:
        env = {**self.env}
        if self.http_port is not None:
            env["HTTP_PORT"] = str(self.http_port)
        if self.admin_port is not None:
            env["ADMIN_PORT"] = str(self.admin_port)
        self.process = ServiceProcess([command_path(self.service)], env, self.log_path).start()
        self.process.wait_http(self.ready_url, timeout=timeout)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.signal(signal.SIGKILL)
            self.process.process.wait(10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.signal(signal.SIGCONT)

    def terminate(self) -> int | None:
        if self.process is None:
            return None
        if self.alive:
            # A paused process never sees SIGTERM.
            self.resume()
        return self.process.terminate(timeout=15)


@dataclass
class ChaosSystem:
    """Everything `make chaos` breaks, started in `workdir` and stopped on exit."""

    workdir: Path
    timing: Timing = field(default_factory=Timing)
    overrides: Mapping[str, str] = field(default_factory=dict)
    # NATS nodes: more than one is a JetStream cluster (jobs_chaos.cluster), every stream R3.
    nodes: int = 1
    nats: NatsServer | NatsCluster = field(init=False)
    postgres: PostgresServer = field(init=False)
    stack: Stack = field(init=False)
    simulator: Replica = field(init=False)
    replicas: dict[str, list[Replica]] = field(init=False, default_factory=dict)

    def __enter__(self) -> ChaosSystem:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # Start and stop --------------------------------------------------------------------

    def start(self) -> None:
        for sub in ("nats", "postgres", "logs"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.nats = NatsServer(self.workdir / "nats")
        replicas = {}
        if self.nodes > 1:
            self.nats = NatsCluster(self.workdir / "nats", self.nodes)
            replicas = {"STREAM_REPLICAS": str(min(self.nodes, 3))}
        self.nats.start()
        self.postgres = PostgresServer(self.workdir / "postgres")
        self.postgres.start()
        asyncio.run(_create_database(self.postgres.dsn(), DATABASE))
        self.stack = Stack(
            nats_url=self.nats.url,
            database_url=self.postgres.dsn(DATABASE),
            ports=Ports(*(free_port() for _ in range(7))),
            log_dir=self.workdir / "logs",
            overrides={
                **self.timing.environment(),
                "LOG_LEVEL": "WARNING",
                # Faults, not guards, are under test: per-user limits would refuse the load, whose
                # jobs are all one user's (its streams too: a reader and a watcher per job).
                "USER_REQUESTS_PER_S": "0",
                "USER_MAX_OPEN_JOBS": "0",
                "USER_MAX_STREAMS": "0",
                **replicas,
                **self.overrides,
            },
        )
        # Faults with permissions on: each service is its own NATS user (the harness, which
        # audits the stream, connects without credentials and may read everything).
        self.stack.secure(self.nats)
        self.stack.migrate()
        base = self.stack.environment()
        logs = self.workdir / "logs"
        self.simulator = Replica(
            "replicate-sim", 0, self.stack.ports.simulator, None, base, logs / "replicate-sim.log"
        )
        self.simulator.start()
        for service in SERVICES:
            self.replicas[service] = [
                Replica(
                    service,
                    i,
                    free_port() if service in ("gateway", "webhook-ingest") else None,
                    free_port(),
                    # Its own NATS user; the replica's ports replace the stack's.
                    self.stack.service_environment(service),
                    logs / f"{service}-{i}.log",
                )
                for i in range(REPLICAS)
            ]
        # Each runner names its own webhook-ingest: the simulator calls back the replica
        # whose URL the prediction carries, so both ingest replicas get traffic.
        pairs = zip(self.replicas["ai-runner"], self.replicas["webhook-ingest"], strict=True)
        for runner, ingest in pairs:
            runner.env["REPLICATE_WEBHOOK_URL"] = (
                f"http://127.0.0.1:{ingest.http_port}/api/webhooks/replicate"
            )
        for service in SERVICES:
            for replica in self.replicas[service]:
                replica.start()

    def stop(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for service in reversed(SERVICES):
            for replica in self.replicas.get(service, []):
                codes[replica.name] = replica.terminate()
        if hasattr(self, "simulator"):
            codes[self.simulator.name] = self.simulator.terminate()
        for server in ("postgres", "nats"):
            if hasattr(self, server):
                getattr(self, server).close()
        return codes

    # What the scenarios use ------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.postgres.dsn(DATABASE)

    @property
    def simulator_url(self) -> str:
        return self.stack.simulator_url

    @property
    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{r.http_port}" for r in self.replicas["gateway"]]

    def dev_token(self) -> str:
        return self.stack.dev_token("chaos-user")

    def all_replicas(self) -> list[Replica]:
        return [r for service in SERVICES for r in self.replicas[service]]

    def revive(self) -> list[str]:
        """Start again whatever is not running (a scenario's restart that failed, a crash),
        resume anything paused, and wait until every replica is ready; the names revived."""
        revived = []
        for replica in self.all_replicas():
            if not replica.alive:
                revived.append(replica.name)
                replica.start()
            else:
                replica.resume()
        for replica in self.all_replicas():
            assert replica.process is not None
            replica.process.wait_http(replica.ready_url, timeout=60)
        return revived

    def metrics(self, service: str) -> dict[str, dict[str, float]]:
        """Counter families summed over their labels, per live replica:
        `{replica: {family: total}}`; the first family of `FAMILIES[service]` is its work."""
        totals = {}
        for replica in self.replicas[service]:
            url = replica.metrics_url
            if url is None or not replica.alive:
                continue
            try:
                text = httpx.get(url, timeout=5).text
            except httpx.HTTPError:
                continue
            totals[replica.name] = {f: sum_family(text, f) for f in FAMILIES[service]}
        return totals

    def set_knobs(self, **knobs: object) -> None:
        httpx.put(f"{self.simulator_url}/_sim/config", json=knobs, timeout=10).raise_for_status()

    def reset_knobs(self) -> None:
        httpx.post(f"{self.simulator_url}/_sim/reset", timeout=10).raise_for_status()

    def webhooks_queued(self) -> int:
        return int(httpx.get(f"{self.simulator_url}/healthz", timeout=10).json()["webhooksQueued"])

    def wait_webhooks_sent(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.webhooks_queued() > 0 and time.monotonic() < deadline:
            time.sleep(0.2)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def sum_family(text: str, name: str) -> float:
    """The sum of one metric's samples over all its labels, from Prometheus text."""
    return sum(float(m.group(3)) for m in _SAMPLE.finditer(text) if m.group(1) == name)


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
