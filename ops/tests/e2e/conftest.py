"""The whole system as processes (as tests/e2e starts it), and `jobsctl` run against it as its
own NATS user with `jobs_proto.permissions.ops_permissions`."""

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from jobs_proto.permissions import NatsUser, ops_permissions
from jobs_proto.subjects import Subjects
from jobs_testkit.processes import command_path
from jobs_testkit.running import running_stack
from jobs_testkit.servers import NatsServer
from jobs_testkit.stack import Stack, nats_password


@pytest.fixture(scope="module")
def stack(
    nats_url: str,
    nats_server: NatsServer | None,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    with running_stack(
        nats_url=nats_url,
        nats_server=nats_server,
        postgres_url=postgres_url,
        log_dir=tmp_path_factory.mktemp("stack"),
        label="ops",
    ) as running:
        yield running


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
