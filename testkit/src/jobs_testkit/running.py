"""The whole system as processes for one test module: the simulator and the four services on
free ports, with a database, stream and subject prefix of their own, stopped and cleaned after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from jobs_testkit.plugin import delete_streams_at
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.stack import Ports, Stack


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextmanager
def running_stack(
    *,
    nats_url: str,
    nats_server: NatsServer | None,
    postgres_url: str,
    log_dir: Path,
    label: str = "e2e",
    overrides: Mapping[str, str] | None = None,
    services: tuple[str, ...] | None = None,
) -> Iterator[Stack]:
    """Started on entry (`services` alone, after the migrations, when given); on exit every
    process must have ended with exit code 0 and, where the test kit's NATS server checks
    permissions, none of its users was refused anything."""
    name = f"{label}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_create_database(postgres_url, name))
    base, _, _ = postgres_url.rpartition("/")
    running = Stack(
        nats_url=nats_url,
        database_url=f"{base}/{name}",
        ports=Ports(*(free_port() for _ in range(7))),
        subject_prefix=f"t{uuid.uuid4().hex[:10]}.",
        jobs_stream=f"JOBS_{uuid.uuid4().hex[:10]}",
        log_dir=log_dir,
        # Short retries keep the fault scenarios quick.
        overrides={"RETRY_BASE_S": "0.2", **(overrides or {})},
    )
    if nats_server is not None:
        # Each service as its own NATS user: the whole flow passes with permissions on.
        running.secure(nats_server)
    try:
        if services is None:
            running.start()
        else:
            running.migrate()
            for service in services:
                running.start_service(service)
        yield running
    finally:
        codes = running.stop()
        asyncio.run(delete_streams_at(nats_url, running.jobs_stream))
        assert all(code == 0 for code in codes.values()), codes
        if nats_server is not None:
            # Users are named after the prefix, so this covers users a test added too.
            assert nats_server.violations(running.subject_prefix) == []
