"""The test kit's databases come migrated with the job-store's own migrations; the store and
the change announcements over the real servers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from job_store.adapters.database import Pool, create_pool
from job_store.adapters.migrations import migrate_database
from job_store.adapters.nats import NatsChangeAnnouncer
from job_store.adapters.postgres import PostgresJobStore
from jobs_proto.api import JobChanged
from jobs_proto.subjects import Subjects
from jobs_testkit.plugin import Migrate


async def _migrate(dsn: str) -> None:
    await migrate_database(dsn)


@pytest.fixture(scope="session")
def database_migrations() -> Migrate:
    return lambda dsn: asyncio.run(_migrate(dsn))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(database_url, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
def store(pool: Pool) -> PostgresJobStore:
    return PostgresJobStore(pool)


@pytest.fixture
def announcer(nats_client: NATS, subjects: Subjects) -> NatsChangeAnnouncer:
    return NatsChangeAnnouncer(nats_client, subjects)


@pytest.fixture
async def announced(nats_client: NATS, subjects: Subjects) -> AsyncIterator[list[JobChanged]]:
    """Every `JobChanged` on this test's `job_change.>`, as received."""
    received: list[JobChanged] = []

    async def collect(msg: Msg) -> None:
        received.append(msgspec.json.decode(msg.data, type=JobChanged))

    subscription = await nats_client.subscribe(subjects.all_job_changes, cb=collect)
    await nats_client.flush()
    yield received
    await subscription.unsubscribe()


@pytest.fixture
async def other_database_url(postgres_url: str, database_template: str) -> AsyncIterator[str]:
    """A second fresh, migrated database of this test (a replay's target)."""
    name = f"other_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{database_template}"')
    finally:
        await conn.close()
    base, _, _ = postgres_url.rpartition("/")
    yield f"{base}/{name}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
