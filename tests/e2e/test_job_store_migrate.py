"""The `job-store migrate` command as a process: idempotent, safe to run twice at once (the
advisory lock), and a bad setting stops it with one line and exit 2."""

from __future__ import annotations

import asyncio
import os
import subprocess

from job_store.adapters.migrations import applied_migrations, load_migrations
from jobs_testkit.processes import command_path


def _migrate_command(dsn: str) -> subprocess.Popen[str]:
    env = {**os.environ, "APP_ENV": "dev", "DATABASE_URL": dsn}
    return subprocess.Popen(
        [command_path("job-store"), "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=30)
    return process.returncode, output


async def test_the_migrate_command_is_idempotent(empty_database_url: str) -> None:
    first_code, first_log = await asyncio.to_thread(_finish, _migrate_command(empty_database_url))
    again_code, again_log = await asyncio.to_thread(_finish, _migrate_command(empty_database_url))
    assert first_code == 0, first_log
    assert again_code == 0, again_log
    assert '"msg":"applied migration"' in first_log
    assert '"msg":"applied migration"' not in again_log
    assert '"msg":"migrated"' in again_log
    assert len(await applied_migrations(empty_database_url)) == len(load_migrations())


async def test_two_migrate_commands_at_once_apply_the_schema_once(empty_database_url: str) -> None:
    processes = [_migrate_command(empty_database_url) for _ in range(2)]
    results = await asyncio.gather(*(asyncio.to_thread(_finish, p) for p in processes))
    for code, log in results:
        assert code == 0, log
    applied_lines = sum(log.count('"msg":"applied migration"') for _, log in results)
    assert applied_lines == len(load_migrations()), "a migration ran twice, or not at all"
    assert await applied_migrations(empty_database_url) == [
        (m.version, m.name) for m in load_migrations()
    ]


async def test_the_migrate_command_reports_a_bad_setting_in_one_line() -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command_path("job-store"), "migrate"],
            env={**os.environ, "APP_ENV": "prod", "DATABASE_URL": ""},
            capture_output=True,
            text=True,
            timeout=30,
        )

    result = await asyncio.to_thread(run)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "job-store: configuration error: DATABASE_URL: missing (required when APP_ENV=prod)"
    ]
