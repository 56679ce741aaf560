"""The test kit's databases come migrated with the job-store's own migrations; the store and
the change announcements over the real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NATS

from job_store.adapters.database import Pool, create_pool
from job_store.adapters.migrations import migrate_database
from job_store.adapters.nats import NatsChangeAnnouncer
from job_store.adapters.postgres import PostgresJobStore
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
