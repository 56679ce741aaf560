import asyncio

import asyncpg
import pytest

from jobs_testkit.plugin import Migrate


async def _migrate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE migrated (note text)")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_migrations() -> Migrate:
    return lambda dsn: asyncio.run(_migrate(dsn))
