"""The whole system as processes (as tests/e2e starts it), and `jobsctl` run against it as its
own NATS user with `jobs_proto.permissions.ops_permissions`."""

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import pytest

from jobs_proto.permissions import NatsUser, ops_permissions
from jobs_proto.subjects import Subjects
from jobs_testkit.plugin import delete_streams_at
from jobs_testkit.processes import command_path
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.stack import Ports, Stack, nats_password


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def stack(
    nats_url: str,
    nats_server: NatsServer | None,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    name = f"ops_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_database(postgres_url, name))
    base, _, _ = postgres_url.rpartition("/")
    running = Stack(
        nats_url=nats_url,
        database_url=f"{base}/{name}",
        ports=Ports(*(free_port() for _ in range(7))),
        subject_prefix=f"t{uuid.uuid4().hex[:10]}.",
        jobs_stream=f"JOBS_{uuid.uuid4().hex[:10]}",
        log_dir=tmp_path_factory.mktemp("stack"),
        overrides={"RETRY_BASE_S": "0.2"},
    )
    if nats_server is not None:
        running.secure(nats_server)
    try:
        running.start()
        yield running
    finally:
        codes = running.stop()
        asyncio.run(delete_streams_at(nats_url, running.jobs_stream))
        assert all(code == 0 for code in codes.values()), codes
        if nats_server is not None:
            # The services' users and jobsctl's (all named after the prefix).
            assert nats_server.violations(running.subject_prefix) == []


@dataclass(frozen=True)
class Jobsctl:
    """`jobsctl` configured for one stack, as an operator would run it."""

    env: dict[str, str]

    def __call__(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command_path("jobsctl"), *args],
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    async def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self, *args, **extra_env)


@pytest.fixture(scope="module")
def jobsctl(stack: Stack, nats_server: NatsServer | None) -> Jobsctl:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "APP_ENV": "dev",
        "NATS_URL": stack.nats_url,
        "JOBS_STREAM": stack.jobs_stream,
        "SUBJECT_PREFIX": stack.subject_prefix,
        "REPLICATE_API_TOKEN": stack.dev_secrets.replicate_token,
        "REPLICATE_BASE_URL": stack.simulator_url,
    }
    if nats_server is not None:
        user = NatsUser(
            user=f"{stack.subject_prefix}ops",
            password=nats_password(),
            permissions=ops_permissions(Subjects(stack.subject_prefix), stack.jobs_stream),
        )
        nats_server.authorize([user])
        env |= {"NATS_USER": user.user, "NATS_PASSWORD": user.password}
    return Jobsctl(env)
