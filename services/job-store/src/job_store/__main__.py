"""Entry point of the `job-store` command: the service under the shared runtime, `migrate`, or
`replay`.

`job-store` migrates the schema, then consumes every job event into Postgres, answers the reads
over NATS request/reply, announces each committed change and purges finished jobs past their
retention, until SIGTERM. `job-store migrate` applies pending migrations and exits 0 (also when
there were none). `job-store replay [--truncate]` rebuilds the tables of `DATABASE_URL` from
the `JOBS` stream and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from datetime import timedelta
from typing import Final

from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from job_store.adapters.budgets import PostgresBudgets
from job_store.adapters.database import (
    Pool,
    create_pool,
    open_database,
    redact,
    with_retries,
)
from job_store.adapters.metrics import PrometheusObserver
from job_store.adapters.migrations import migrate_database
from job_store.adapters.nats import JobStoreEndpoints, NatsChangeAnnouncer, NatsResultLoader
from job_store.adapters.parking import NatsParking
from job_store.adapters.postgres import PostgresJobStore
from job_store.adapters.stream_reader import StreamReader
from job_store.applier import EventApplier
from job_store.budgets import release_stale_reservations
from job_store.config import MigrateSettings, Settings
from job_store.replay import replay
from job_store.retention import purge_finished
from jobs_proto.events import EVENT_KINDS
from jobs_proto.permissions import inbox_prefix
from jobs_proto.stream import job_store_consumer
from jobs_runtime import commands
from jobs_runtime.bus import connect
from jobs_runtime.commands import Command, load_or_exit
from jobs_runtime.consumer import ConsumerLoop
from jobs_runtime.errors import Unavailable
from jobs_runtime.periodic import every
from jobs_runtime.service import Service, run_service

NAME: Final = "job-store"
log = logging.getLogger("job_store")

# The one-shot `migrate` waits about half a minute for Postgres, then fails.
_MIGRATE_ATTEMPTS: Final = 6
_POOL_CLOSE_S: Final = 5.0
# Rows of running jobs kept in hand (see `PostgresJobStore`): far more than the jobs one replica
# has running at once at any rate it sustains, and bounded, since each holds its input.
_CACHED_ROWS: Final = 2048
# Batches of other jobs written while one commits: a lone event then waits for its own commit
# only, not for another job's flush to disk as well (Postgres flushes them together).
_CONCURRENT_BATCHES: Final = 2


async def retention_fits(js: JetStreamContext, settings: Settings) -> bool:
    """Whether the JOBS stream keeps events at least as long as finished jobs are kept; if
    not, says so in one log line. Replay can only rebuild what the stream still holds."""
    config = (await js.stream_info(settings.jobs_stream)).config
    max_age = config.max_age or 0.0  # 0: no age limit
    if max_age == 0 or max_age >= settings.job_retention_s:
        return True
    log.error(
        "refusing to start: the %s stream keeps events %.0f s (max_age) but JOB_RETENTION_S is"
        " %.0f s; lower JOB_RETENTION_S or raise STREAM_MAX_AGE_S",
        settings.jobs_stream,
        max_age,
        settings.job_retention_s,
        extra={"max_age_s": max_age, "job_retention_s": settings.job_retention_s},
    )
    return False


async def serve(service: Service[Settings]) -> int | None:
    """The service's work: database, read endpoints, then the consumer until `stop`;
    `REFUSED` when a setting contradicts the stream."""
    settings = service.settings
    serving: PostgresJobStore | None = None
    if not await retention_fits(service.js, settings):
        return commands.REFUSED

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
        return None  # stopped while waiting for Postgres: nothing was started
    # Rows this process wrote stay in hand, so the next event of a running job needs no read.
    store = PostgresJobStore(pool, cached_rows=_CACHED_ROWS)
    endpoint = JobStoreEndpoints(
        service.nc, settings.subjects, store, budgets=PostgresBudgets(pool)
    )
    try:
        await endpoint.start()
        serving = store
        observer = PrometheusObserver()
        parking = NatsParking(
            service.js,
            settings.subjects,
            settings.jobs_stream,
            replicas=settings.stream_replicas,
            max_bytes=settings.parked_stream_max_bytes,
            observer=observer,
        )
        await service.set_up(f"stream {parking.stream}", parking.ensure)
        applier = EventApplier(
            store,
            NatsChangeAnnouncer(service.nc, settings.subjects),
            NatsResultLoader(service.js, settings.jobs_stream, settings.capacity),
            observer=observer,
            parking=parking,
            orphan_after=timedelta(seconds=settings.orphan_after_s),
            concurrent_batches=_CONCURRENT_BATCHES,
        )
        consumer = ConsumerLoop(
            service.js,
            stream=settings.jobs_stream,
            spec=job_store_consumer(settings.subjects),
            subjects=settings.subjects,
            handlers=dict.fromkeys(EVENT_KINDS, applier),
            on_ready=service.ready,
            on_reject=parking.park_message,
            # The next fetch goes out while a batch is applied, so an event arriving meanwhile
            # joins the next batch at once (push latency); the applier keeps stream order.
            overlap=True,
        )
        log.info(
            "serving",
            extra={
                "get_subject": settings.subjects.get_job,
                "list_subject": settings.subjects.list_jobs,
                "stuck_subject": settings.subjects.stuck_jobs,
                "history_subject": settings.subjects.job_history,
                "reserve_subject": settings.subjects.reserve_budget,
                "job_retention_s": settings.job_retention_s,
            },
        )

        async def purge() -> None:
            published = await purge_finished(
                store,
                service.publisher,
                retention_s=settings.job_retention_s,
                limit=settings.retention_batch,
                observer=observer,
            )
            if published:
                log.info("finished jobs past retention purged", extra={"jobs": published})

        async def sweep_reservations() -> bool:
            # A full batch: more may be waiting, so the next round starts at once.
            return settings.reservation_sweep_batch <= await release_stale_reservations(
                PostgresBudgets(pool),
                grace_s=settings.reservation_grace_s,
                limit=settings.reservation_sweep_batch,
                observer=observer,
            )

        async def sample_lag() -> None:
            try:
                info = await service.js.consumer_info(settings.jobs_stream, consumer_name)
            except (NatsError, TimeoutError) as exc:
                # NATS away for now: the sample is skipped with a warning, not a traceback.
                raise Unavailable(f"consumer info: {exc!r}") from exc
            observer.consumer_sampled(info.num_pending or 0, info.num_ack_pending or 0)

        async def sample_past_deadline() -> None:
            observer.past_deadline(*await store.past_deadline())

        consumer_name = job_store_consumer(settings.subjects).durable
        chores = [
            asyncio.create_task(
                every(settings.retention_interval_s, service.stop, "retention pass", purge)
            ),
            asyncio.create_task(
                every(settings.lag_sample_s, service.stop, "lag sample", sample_lag)
            ),
            asyncio.create_task(
                every(
                    settings.lag_sample_s,
                    service.stop,
                    "stuck jobs",
                    sample_past_deadline,
                    first_at_once=True,
                )
            ),
            asyncio.create_task(
                every(
                    settings.reservation_sweep_s,
                    service.stop,
                    "reservation sweep",
                    sweep_reservations,
                )
            ),
        ]
        try:
            await consumer.run(service.stop)
        finally:
            for chore in chores:
                chore.cancel()
            await asyncio.gather(*chores, return_exceptions=True)
            await applier.drain()
    finally:
        await endpoint.stop()
        try:
            await asyncio.wait_for(pool.close(), _POOL_CLOSE_S)
        except TimeoutError:
            pool.terminate()
    return None


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
        return commands.FAILED
    if applied is None:
        log.error("stopped before migrating")
        return commands.FAILED
    log.info("migrated", extra={"applied": [m.version for m in applied]})
    return commands.OK


async def replay_command(settings: Settings, *, truncate: bool) -> int:
    """`job-store replay`: the exit code of rebuilding `DATABASE_URL`'s tables from the stream."""
    dsn = settings.database_url
    stop = asyncio.Event()
    try:
        pool = await with_retries(
            lambda: _migrated_pool(dsn), dsn=dsn, stop=stop, give_up_after=_MIGRATE_ATTEMPTS
        )
    except Exception as exc:
        log.error("replay failed: %s", redact(f"{type(exc).__name__}: {exc}", dsn))
        return commands.FAILED
    assert pool is not None  # `stop` is never set here
    # The job-store's own NATS user and inbox: replay reads what the service reads.
    nc = await connect(
        settings.nats_url, f"{NAME}-replay", auth=settings.nats_auth, inbox=inbox_prefix(NAME)
    )
    try:
        store = PostgresJobStore(pool)
        if truncate:
            await store.truncate()
        elif await store.count_jobs():
            log.error("replay needs an empty database (or --truncate to empty this one first)")
            return commands.FAILED
        js = nc.jetstream()
        reader = StreamReader(js, settings.jobs_stream, settings.subjects)
        results = NatsResultLoader(js, settings.jobs_stream, settings.capacity)
        report = await replay(reader.batches(), store, results)
        report.skipped = reader.skipped
    finally:
        await nc.close()
        await pool.close()
    log.info(
        "replayed",
        extra={
            "events": report.events,
            "changed": report.changed,
            "unchanged": report.unchanged,
            "purged": report.purged,
            "orphans": report.orphans,
            "failed": report.failed,
            "skipped": report.skipped,
            "foreign": report.foreign,
        },
    )
    return commands.FAILED if report.failed else commands.OK


async def _migrated_pool(dsn: str) -> Pool:
    await migrate_database(dsn)
    return await create_pool(dsn, max_size=2)


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--truncate", action="store_true", help="empty the tables first if they hold jobs"
    )


def main() -> None:
    commands.main(
        NAME,
        lambda: run_service(NAME, Settings, serve),
        [
            Command(
                "migrate",
                "apply pending migrations to DATABASE_URL and exit",
                lambda _: asyncio.run(migrate_command(load_or_exit(NAME, MigrateSettings))),
            ),
            Command(
                "replay",
                "rebuild the tables of DATABASE_URL from the JOBS stream and exit",
                lambda args: asyncio.run(
                    replay_command(load_or_exit(NAME, Settings), truncate=args.truncate)
                ),
                arguments=_replay_arguments,
            ),
        ],
    )


if __name__ == "__main__":
    main()
