"""`make run`: the whole system on one machine, with NATS and Postgres of its own under `.data/`.

NATS listens on 14222 and Postgres on 15432 unless `NATS_URL` / `DATABASE_URL` name servers to
use instead; the dev secrets are made once and kept in `.data/dev-secrets.json`, so tokens and
data survive a restart. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

import asyncpg

from jobs_testkit.servers import NatsServer, PostgresServer
from jobs_testkit.stack import DevSecrets, Stack

DATA = Path(".data").resolve()
NATS_PORT = 14222
POSTGRES_PORT = 15432
DATABASE = "jobs"


def say(line: str) -> None:
    print(line, flush=True)


def dev_secrets() -> DevSecrets:
    path = DATA / "dev-secrets.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    # A file from an older release lacks newer secrets (the NATS passwords): they are made now
    # and kept from then on.
    secrets = DevSecrets(**stored)
    if asdict(secrets) != stored:
        path.write_text(json.dumps(asdict(secrets), indent=2))
        path.chmod(0o600)
    return secrets


async def ensure_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def wait_for_signal(stack: Stack) -> int:
    """Until Ctrl-C or SIGTERM (0), or until a service dies on its own (1)."""
    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda number, _frame: stopping.append(number))
    while not stopping:
        for name, process in stack.processes.items():
            if process.process.poll() is not None:
                say(f"{name} exited with {process.process.returncode}; stopping everything")
                return 1
        time.sleep(0.2)
    return 0


def main() -> int:
    DATA.mkdir(exist_ok=True)
    with ExitStack() as servers:
        nats_url = os.environ.get("NATS_URL")
        nats: NatsServer | None = None
        if not nats_url:
            # No anonymous access: every service is its own user, as in deploy/.
            nats = NatsServer(DATA / "nats", port=NATS_PORT, anonymous=False)
            nats_url = nats.url
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            (DATA / "postgres").mkdir(exist_ok=True)
            postgres = servers.enter_context(PostgresServer(DATA / "postgres", port=POSTGRES_PORT))
            asyncio.run(ensure_database(postgres.dsn(), DATABASE))
            database_url = postgres.dsn(DATABASE)
            say(f"Postgres on {database_url}, data in {DATA / 'postgres'}")
        stack = Stack(nats_url=nats_url, database_url=database_url, dev_secrets=dev_secrets())
        stack.overrides = {k: os.environ[k] for k in stack.environment() if k in os.environ}
        if nats is not None:
            stack.secure(nats)
            servers.enter_context(nats)
            say(f"NATS (JetStream) on {nats_url}, a user per service, data in {DATA / 'nats'}")
        try:
            stack.start()
            say(f"Replicate simulator on {stack.simulator_url} (knobs: PUT /_sim/config)")
            say(f"GATEWAY_URL={stack.gateway_url}")
            say(f"DEV_TOKEN={stack.dev_token()}")
            say("Ctrl-C stops everything.")
            code = wait_for_signal(stack)
        finally:
            say("stopping...")
            stack.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
