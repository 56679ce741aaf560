"""Postgres as the job-store connects to it: the pool (jsonb through msgspec, no reset round
trip), what "unavailable" looks like, and startup that waits for the database.

Startup never crash-loops: a bad `DATABASE_URL` or a database that is down is retried with
backoff, one log line per attempt, until it works or the service is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
import msgspec

from job_store.adapters.columns import encode_jsonb
from job_store.adapters.migrations import migrate_database
from jobs_runtime.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# asyncpg's classes are generic only in their stubs, so the aliases are strings at runtime.
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

# What "the database cannot be reached now" looks like: refused or lost connections, a server
# starting up or shutting down, a full server, a statement timing out.
UNAVAILABLE: Final = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def unavailable(exc: BaseException) -> Unavailable:
    """The runtime's `Unavailable` for one of `UNAVAILABLE`, naming what happened."""
    return Unavailable(f"postgres unavailable: {type(exc).__name__}: {exc}")


async def _init_connection(conn: Connection) -> None:
    # jsonb in and out as Python objects, through msgspec rather than the json module.
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=encode_jsonb, decoder=msgspec.json.decode
    )


async def _keep_session(conn: Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own rollback of an open transaction.

    asyncpg's default sends `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL` on every
    release, a round trip per transaction; this store takes only transaction-level advisory
    locks (the budgets', released at commit or rollback), and never keeps cursors, listens or
    changes settings on pooled connections (migrations use a connection of their own), so there
    is nothing to reset.
    """


async def create_pool(dsn: str, *, max_size: int, timeout_s: float = 5.0) -> Pool:
    """A pool whose connections speak jsonb; raises when the database cannot be reached."""
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        timeout=timeout_s,
        # A statement stuck behind a lock or a dying server fails instead of hanging a handler.
        command_timeout=15.0,
    )


def redact(text: str, dsn: str) -> str:
    """`text` without the DSN's password, for error messages that may quote the DSN."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return text
    if not password:
        return text
    for secret in {password, unquote(password)}:
        text = text.replace(secret, "***")
    return text


async def _unless_stopped(work: asyncio.Future[T], stop: asyncio.Event) -> T | None:
    """`work`'s result, or None (with `work` cancelled) if `stop` is set first."""
    stopping = asyncio.ensure_future(stop.wait())
    either: set[asyncio.Future[Any]] = {work, stopping}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if work.done():
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    return None


async def with_retries(
    action: Callable[[], Awaitable[T]],
    *,
    dsn: str,
    stop: asyncio.Event,
    give_up_after: int | None = None,
    max_delay_s: float = 10.0,
) -> T | None:
    """`action()`'s result, retried with backoff until it succeeds or `stop` is set (then None).

    Anything from a malformed URL to a refused connection or a failing migration is retried,
    one warning line per attempt, so a pod waits for its database instead of crash-looping.
    `give_up_after` bounds the attempts (for one-shot commands), re-raising the last error.
    """
    delay = 0.5
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            return await _unless_stopped(asyncio.ensure_future(action()), stop)
        except Exception as exc:
            if give_up_after is not None and attempt >= give_up_after:
                raise
            log.warning(
                "postgres not ready, retrying in %.1fs: %s",
                delay,
                redact(f"{type(exc).__name__}: {exc}", dsn),
                extra={"attempt": attempt},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, max_delay_s)
    return None


async def open_database(dsn: str, *, pool_size: int, stop: asyncio.Event) -> Pool | None:
    """Migrate (under the lock), then open the pool; None if stopped before it worked."""

    async def migrate_and_connect() -> Pool:
        await migrate_database(dsn)
        return await create_pool(dsn, max_size=pool_size)

    return await with_retries(migrate_and_connect, dsn=dsn, stop=stop)
