"""The whole system as processes: the simulator and the four services, wired to one NATS and
one Postgres. `make run` and the end-to-end tests start it the same way; `secure` gives each
service its own NATS user with the allow lists of `jobs_proto.permissions`."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from jobs_proto.permissions import OPERATOR, NatsUser, service_users
from jobs_proto.subjects import Subjects
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers.cluster import NatsCluster
from jobs_testkit.servers.nats import NatsServer

SERVICES = ("job-store", "ai-runner", "webhook-ingest", "gateway")


def nats_password() -> str:
    """A random NATS password that nats-server reads back as a string from a `$VARIABLE` (as
    deploy/ passes them): a value starting with `-` is parsed as a number and refused."""
    return "nats_" + secrets.token_urlsafe(24)


def _nats_passwords() -> dict[str, str]:
    # The operator's too: deploy/'s nats-users Secret holds one for `jobsctl`.
    return {user: nats_password() for user in (*SERVICES, OPERATOR)}


@dataclass(frozen=True)
class Ports:
    """The contract's ports by default; tests pass free ones."""

    gateway: int = 8000
    webhook_ingest: int = 8001
    simulator: int = 8010
    gateway_admin: int = 9000
    webhook_ingest_admin: int = 9001
    ai_runner_admin: int = 9002
    job_store_admin: int = 9003


@dataclass(frozen=True)
class DevSecrets:
    """The secrets one local system shares: the simulator signs with the webhook secret that
    webhook-ingest verifies, and accepts the token the ai-runner sends."""

    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # Signs the gateway's job tokens; a key of its own, never the session tokens' one.
    job_token_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    replicate_token: str = field(default_factory=lambda: "r8_dev_" + secrets.token_hex(16))
    webhook_secret: str = field(
        default_factory=lambda: (
            "whsec_" + __import__("base64").b64encode(secrets.token_bytes(24)).decode()
        )
    )
    # Each service's NATS password, by service.
    nats_passwords: dict[str, str] = field(default_factory=_nats_passwords)


@dataclass
class Stack:
    nats_url: str
    database_url: str
    ports: Ports = field(default_factory=Ports)
    dev_secrets: DevSecrets = field(default_factory=DevSecrets)
    subject_prefix: str = ""
    jobs_stream: str = "JOBS"
    log_dir: Path | None = None
    # Applied last, so what the operator set in the environment wins over the defaults here.
    overrides: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    # Set by `secure`: each service connects as its own NATS user.
    nats_auth: bool = False

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}"

    @property
    def simulator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.simulator}"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.webhook_ingest}/api/webhooks/replicate"

    def environment(self) -> dict[str, str]:
        s = self.dev_secrets
        env = {
            "APP_ENV": "dev",
            "NATS_URL": self.nats_url,
            "DATABASE_URL": self.database_url,
            "JOBS_STREAM": self.jobs_stream,
            "SUBJECT_PREFIX": self.subject_prefix,
            "AUTH_JWT_SECRET": s.jwt_secret,
            "JOB_TOKEN_SECRET": s.job_token_secret,
            "REPLICATE_API_TOKEN": s.replicate_token,
            "SIM_API_TOKEN": s.replicate_token,
            "REPLICATE_WEBHOOK_SECRET": s.webhook_secret,
            "SIM_WEBHOOK_SECRET": s.webhook_secret,
            "REPLICATE_BASE_URL": self.simulator_url,
            "REPLICATE_WEBHOOK_URL": self.webhook_url,
        }
        env.update(self.overrides)
        return env

    def nats_users(self) -> list[NatsUser]:
        """The services' users for this stack's prefix and stream; named after the prefix too,
        so several stacks can share one server."""
        return service_users(
            Subjects(self.subject_prefix),
            self.jobs_stream,
            self.dev_secrets.nats_passwords,
            user_prefix=self.subject_prefix,
        )

    def secure(self, server: NatsServer | NatsCluster) -> None:
        """Give `server` this stack's users and run every service as its own from now on."""
        server.authorize(self.nats_users())
        self.nats_auth = True

    def service_environment(self, name: str) -> dict[str, str]:
        """What one service (or the simulator) runs with: the shared environment, its ports,
        and once secured its NATS user."""
        env = {**self.environment(), **{k: str(v) for k, v in self._ports_of(name).items()}}
        if self.nats_auth and name in SERVICES:
            env["NATS_USER"] = f"{self.subject_prefix}{name}"
            env["NATS_PASSWORD"] = self.dev_secrets.nats_passwords[name]
        return env

    def _ports_of(self, name: str) -> dict[str, int]:
        p = self.ports
        return {
            "replicate-sim": {"HTTP_PORT": p.simulator},
            "job-store": {"ADMIN_PORT": p.job_store_admin},
            "ai-runner": {"ADMIN_PORT": p.ai_runner_admin},
            "webhook-ingest": {"HTTP_PORT": p.webhook_ingest, "ADMIN_PORT": p.webhook_ingest_admin},
            "gateway": {"HTTP_PORT": p.gateway, "ADMIN_PORT": p.gateway_admin},
        }[name]

    def _readiness_url(self, name: str) -> str:
        # The simulator has no admin port; its API port answers /healthz.
        ports = self._ports_of(name)
        if "ADMIN_PORT" in ports:
            return f"http://127.0.0.1:{ports['ADMIN_PORT']}/readyz"
        return f"http://127.0.0.1:{ports['HTTP_PORT']}/healthz"

    def migrate(self) -> None:
        subprocess.run(
            [command_path("job-store"), "migrate"],
            env={**self.environment()},
            check=True,
            timeout=120,
        )

    def start_service(self, name: str) -> ServiceProcess:
        log = None if self.log_dir is None else self.log_dir / f"{name}.log"
        env = self.service_environment(name)
        process = ServiceProcess([command_path(name)], env, log)
        self.processes[name] = process.start()
        process.wait_http(self._readiness_url(name), timeout=60)
        return process

    def start(self) -> None:
        self.migrate()
        for name in ("replicate-sim", *SERVICES):
            self.start_service(name)

    def stop_service(self, name: str) -> int:
        return self.processes.pop(name).terminate()

    def stop(self) -> dict[str, int]:
        """SIGTERM everything, front door first, and the exit code of each."""
        codes = {}
        for name in reversed(("replicate-sim", *SERVICES)):
            if name in self.processes:
                codes[name] = self.stop_service(name)
        return codes

    def dev_token(self, sub: str = "dev-user") -> str:
        result = subprocess.run(
            [command_path("gateway"), "dev-token", "--sub", sub],
            env=self.environment(),
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout.strip()
