"""Settings of the ai-runner service, from the environment."""

from __future__ import annotations

from typing import ClassVar

from jobs_runtime.settings import Port, ServiceSettings


class Settings(ServiceSettings, frozen=True):
    """The ai-runner's settings; `APP_ENV=prod` requires NATS_URL REPLICATE_API_TOKEN."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        "NATS_URL",
        "REPLICATE_API_TOKEN",
    )

    admin_port: Port = 9002
    replicate_api_token: str = "dev-only-replicate-token"
    replicate_base_url: str = "http://127.0.0.1:8010"
    replicate_webhook_url: str = ""
    reconcile_after_s: float = 300.0
