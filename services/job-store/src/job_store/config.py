"""Settings of the job-store service and of its `migrate` command, from the environment."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

import msgspec

from jobs_runtime.secrets import SecretURL
from jobs_runtime.settings import EnvSettings, Port, ServiceSettings

DEV_DATABASE_URL: Final = "postgresql://postgres@127.0.0.1:15432/jobs"


class Settings(ServiceSettings, frozen=True):
    """The job-store's settings; `APP_ENV=prod` requires NATS_URL DATABASE_URL."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.required_in_prod,
        "DATABASE_URL",
    )

    admin_port: Port = 9003
    database_url: SecretURL = DEV_DATABASE_URL
    # Connections to Postgres; a consumer batch and the get endpoint wait their turn for one.
    database_pool_size: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10
    # An event of a job still unknown this long after it happened is parked (dead-lettered).
    orphan_after_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    # Finished jobs and their history are purged this long after they completed; the JOBS
    # stream's max_age must be at least this (checked at startup).
    job_retention_s: Annotated[float, msgspec.Meta(gt=0)] = 30 * 86_400.0
    # How often a retention pass runs, and how many jobs one pass purges at most.
    retention_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    retention_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    # How often the consumer's lag (`job_store_consumer_lag`) is sampled.
    lag_sample_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # A budget reservation whose job is still unknown this long after it was made is released
    # (its gateway died between reserving and publishing); the sweep runs every
    # `RESERVATION_SWEEP_S` and frees at most `RESERVATION_SWEEP_BATCH` per run.
    reservation_grace_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    reservation_sweep_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    reservation_sweep_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500


class MigrateSettings(EnvSettings, frozen=True):
    """What `job-store migrate` reads: only the database (a migration job needs no NATS)."""

    required_in_prod: ClassVar[tuple[str, ...]] = ("DATABASE_URL",)

    database_url: SecretURL = DEV_DATABASE_URL
