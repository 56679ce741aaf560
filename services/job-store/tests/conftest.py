"""The test kit's databases come migrated with the job-store's own migrations; the store and
the change announcements over the real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from job_store.adapters.migrations import migrate_database
from job_store.adapters.nats import NatsChangeAnnouncer
from job_store.adapters.postgres import Pool, PostgresJobStore, create_pool
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
