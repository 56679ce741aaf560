"""Versioned schema migrations: the package's `migrations/NNNN_name.sql`, applied in order once.

Every replica (and `job-store migrate`) may run this at the same moment; a fixed advisory lock
makes them take turns, so each migration runs once and is recorded in `schema_migrations`. The
lock and every pending migration share one transaction (`pg_advisory_xact_lock`), so the lock
holds through a pooler in transaction mode (PgBouncer, CloudNativePG's), where a session lock
and its unlock could land on different server connections.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import asyncpg

log = logging.getLogger(__name__)

# Any fixed number works as long as nothing else sharing the database uses it: "job_stor".
MIGRATION_LOCK_KEY: Final = 0x6A6F_625F_7374_6F72

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_CREATE_LEDGER: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One SQL file of the package: `0001_jobs.sql` is version 1, named `jobs`."""

    version: int
    name: str
    sql: str


class MigrationFilesError(Exception):
    """The package's migration files are inconsistent (a packaging bug, not a runtime one)."""


def load_migrations() -> list[Migration]:
    """Every migration shipped in the package, by version; gaps and duplicates are refused."""
    found: list[Migration] = []
    for entry in (resources.files("job_store") / "migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(
            Migration(
                version=int(match["version"]),
                name=match["name"],
                sql=entry.read_text(encoding="utf-8"),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationFilesError(f"migration versions must be 1, 2, 3, ... in order: {versions}")
    return found


async def migrate(conn: asyncpg.Connection[Any]) -> list[Migration]:
    """Apply the pending migrations on `conn`; returns those this call applied (often none).
    All of them or none: one that fails rolls the others of this run back with it."""
    migrations = load_migrations()
    done: list[Migration] = []
    async with conn.transaction():
        # Released at commit or rollback, or by Postgres if this process dies.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(_CREATE_LEDGER)
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations:
            if migration.version in applied:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            done.append(migration)
    for migration in done:
        log.info(
            "applied migration",
            extra={"migration": migration.version, "migration_name": migration.name},
        )
    newer = sorted(applied - {m.version for m in migrations})
    if newer:
        # A newer release migrated already; expand-only migrations keep this one working.
        log.info("database has newer migrations than this release", extra={"newer": newer})
    log.info(
        "schema up to date",
        extra={"version": max([*applied, *(m.version for m in done)], default=0)},
    )
    return done


async def migrate_database(dsn: str, *, timeout_s: float = 5.0) -> list[Migration]:
    """Connect to `dsn`, apply pending migrations, disconnect."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def applied_migrations(dsn: str, *, timeout_s: float = 5.0) -> list[tuple[int, str]]:
    """The ledger of `dsn`: each migration applied, as (version, name), oldest first."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()
