"""Entry point of the `job-store` command: the service under the shared runtime, or `migrate`.

`job-store` migrates the schema, then consumes every job event into Postgres, answers the reads
over NATS request/reply and announces each committed change, until SIGTERM. `job-store migrate`
applies pending migrations and exits 0 (also when there were none).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from datetime import timedelta
from typing import Final, NoReturn

from job_store.adapters.metrics import PrometheusObserver
from job_store.adapters.migrations import migrate_database
from job_store.adapters.nats import JobStoreEndpoints, NatsChangeAnnouncer, NatsResultLoader
from job_store.adapters.parking import NatsParking
from job_store.adapters.postgres import PostgresJobStore, open_database, redact, with_retries
from job_store.config import MigrateSettings, Settings
from job_store.handlers import EventApplier
from jobs_proto.events import EVENT_KINDS
from jobs_proto.stream import job_store_consumer
from jobs_runtime.consumer import ConsumerLoop
from jobs_runtime.logs import configure_logging
from jobs_runtime.service import Service, run
from jobs_runtime.settings import SettingsError, load_settings

NAME: Final = "job-store"
log = logging.getLogger("job_store")

# The one-shot `migrate` waits about half a minute for Postgres, then fails.
_MIGRATE_ATTEMPTS: Final = 6
_POOL_CLOSE_S: Final = 5.0


async def serve(service: Service[Settings]) -> None:
    """The service's work: database, read endpoints, then the consumer until `stop`."""
    settings = service.settings
    serving: PostgresJobStore | None = None

    async def postgres_ready() -> None:
        # Not ready until the database is migrated and the read endpoints take requests.
        if serving is None:
            raise ConnectionError("not connected to postgres yet")
        await serving.ping()

    service.readiness.add("postgres", postgres_ready)
    pool = await open_database(
        settings.database_url, pool_size=settings.database_pool_size, stop=service.stop
    )
    if pool is None:
        return  # stopped while waiting for Postgres: nothing was started
    store = PostgresJobStore(pool)
    endpoint = JobStoreEndpoints(service.nc, settings.subjects, store)
    try:
        await endpoint.start()
        serving = store
        parking = NatsParking(
            service.js,
            settings.subjects,
            settings.jobs_stream,
            replicas=settings.stream_replicas,
        )
        await parking.ensure()
        applier = EventApplier(
            store,
            NatsChangeAnnouncer(service.nc, settings.subjects),
            NatsResultLoader(service.js, settings.jobs_stream),
            observer=PrometheusObserver(),
            parking=parking,
            orphan_after=timedelta(seconds=settings.orphan_after_s),
        )
        consumer = ConsumerLoop(
            service.js,
            stream=settings.jobs_stream,
            spec=job_store_consumer(settings.subjects),
            subjects=settings.subjects,
            handlers=dict.fromkeys(EVENT_KINDS, applier),
            on_ready=service.ready,
            on_reject=parking.park_message,
        )
        log.info(
            "serving",
            extra={
                "get_subject": settings.subjects.get_job,
                "list_subject": settings.subjects.list_jobs,
                "stuck_subject": settings.subjects.stuck_jobs,
                "history_subject": settings.subjects.job_history,
            },
        )
        await consumer.run(service.stop)
    finally:
        await endpoint.stop()
        try:
            await asyncio.wait_for(pool.close(), _POOL_CLOSE_S)
        except TimeoutError:
            pool.terminate()


async def migrate_command(settings: MigrateSettings) -> int:
    """`job-store migrate`: the exit code of applying pending migrations."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dsn = settings.database_url
    try:
        applied = await with_retries(
            lambda: migrate_database(dsn), dsn=dsn, stop=stop, give_up_after=_MIGRATE_ATTEMPTS
        )
    except Exception as exc:
        log.error("migration failed: %s", redact(f"{type(exc).__name__}: {exc}", dsn))
        return 1
    if applied is None:
        log.error("stopped before migrating")
        return 1
    log.info("migrated", extra={"applied": [m.version for m in applied]})
    return 0


def migrate_main() -> NoReturn:
    try:
        settings = load_settings(MigrateSettings)
    except SettingsError as exc:
        # The same one line the runtime writes for the service's own configuration errors.
        sys.stderr.write(f"{NAME}: configuration error: {exc}\n")
        sys.exit(2)
    configure_logging(NAME, settings.log_level)
    sys.exit(asyncio.run(migrate_command(settings)))


def main() -> None:
    match sys.argv[1:]:
        case []:
            run(NAME, Settings, serve)
        case ["migrate"]:
            migrate_main()
        case _:
            configure_logging(NAME)
            log.error("usage: job-store [migrate]", extra={"argv": sys.argv[1:]})
            sys.exit(2)


if __name__ == "__main__":
    main()
