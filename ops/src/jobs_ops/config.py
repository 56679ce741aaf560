"""What `jobsctl` reads from the environment: the services' NATS settings, and optionally the
job-store's database and Replicate's API."""

from __future__ import annotations

from typing import Annotated

import msgspec

from jobs_runtime.secrets import Secret, SecretURL
from jobs_runtime.settings import ServiceSettings, SettingsError


class Settings(ServiceSettings, frozen=True):
    """NATS as every service reads it (`NATS_URL`, `NATS_USER`/`NATS_PASSWORD` or `NATS_CREDS`,
    `NATS_TLS_CA`, `JOBS_STREAM`, `SUBJECT_PREFIX`); the rest is optional."""

    # Set: jobs and history are read from Postgres directly instead of asking the job-store.
    database_url: SecretURL = ""
    # Set: each job's prediction is read from Replicate (`GET /v1/predictions/{id}`).
    replicate_api_token: Secret = ""
    replicate_base_url: str = "https://api.replicate.com"
    # How long one NATS request, Replicate read or database query may take.
    ops_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0

    def check(self) -> None:
        super().check()
        if not self.replicate_base_url.startswith(("http://", "https://")):
            raise SettingsError("REPLICATE_BASE_URL: not an http(s) URL")
