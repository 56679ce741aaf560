"""The fixtures give every test its own migrated database, subject prefix and stream."""

import uuid

import asyncpg
from nats.aio.client import Client as NATS

from jobs_proto.output import output_stream
from jobs_proto.stream import StreamSpec, jobs_stream
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import ensure_stream
from jobs_testkit.plugin import delete_streams_of

seen_databases: set[str] = set()
seen_prefixes: set[str] = set()


async def _use_database(database_url: str) -> None:
    assert database_url not in seen_databases
    seen_databases.add(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        # Migrated through the template, and empty: no other test's rows leak in.
        assert await conn.fetchval("SELECT count(*) FROM migrated") == 0
        await conn.execute("INSERT INTO migrated VALUES ('mine')")
    finally:
        await conn.close()


async def test_a_fresh_migrated_database(database_url: str) -> None:
    await _use_database(database_url)


async def test_another_fresh_migrated_database(database_url: str) -> None:
    await _use_database(database_url)


def test_prefixes_are_unique(subjects: Subjects) -> None:
    assert subjects.prefix not in seen_prefixes
    seen_prefixes.add(subjects.prefix)


def test_prefixes_are_unique_again(subjects: Subjects) -> None:
    assert subjects.prefix not in seen_prefixes
    seen_prefixes.add(subjects.prefix)


async def test_the_stream_is_this_tests_own(
    nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    js = nats_client.jetstream()
    info = await js.stream_info(jobs_stream_ready.name)
    assert info.config.subjects == [subjects.all_events]
    assert info.config.max_msg_size == 8 * 1024 * 1024
    assert info.config.duplicate_window is not None
    assert info.config.duplicate_window >= 300
    assert info.state.messages == 0


async def test_a_tests_streams_are_deleted_with_their_companions_alone(
    nats_client: NATS, subjects: Subjects
) -> None:
    # The output log reserves a GiB of the server's storage while it lives: left behind by every
    # test, a session's server refuses new streams ("insufficient storage resources").
    js = nats_client.jetstream()
    mine = jobs_stream(subjects, name=f"JOBS_{uuid.uuid4().hex[:12]}")
    other = jobs_stream(Subjects(f"o{uuid.uuid4().hex[:8]}."), name=f"JOBS_{uuid.uuid4().hex[:12]}")
    for spec in (mine, output_stream(subjects, mine.name, longest_deadline_s=60), other):
        await ensure_stream(js, spec)
    await js.create_key_value(bucket=f"{mine.name}_CLAIMS")

    await delete_streams_of(js, mine.name)

    left = {info.config.name for info in await js.streams_info()}
    assert other.name in left
    assert not {name for name in left if mine.name in (name or "")}
    await js.delete_stream(other.name)
