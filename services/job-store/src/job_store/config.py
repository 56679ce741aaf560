"""Settings of the job-store service, from the environment."""

from __future__ import annotations

from typing import ClassVar

from jobs_runtime.settings import Port, ServiceSettings


class Settings(ServiceSettings, frozen=True):
    """The job-store's settings; `APP_ENV=prod` requires NATS_URL DATABASE_URL."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        "NATS_URL",
        "DATABASE_URL",
    )

    admin_port: Port = 9003
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
