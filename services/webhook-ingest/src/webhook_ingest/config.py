"""Settings of the webhook-ingest service, from the environment."""

from __future__ import annotations

from typing import ClassVar

from jobs_runtime.settings import Port, ServiceSettings


class Settings(ServiceSettings, frozen=True):
    """The webhook-ingest's settings; `APP_ENV=prod` requires NATS_URL REPLICATE_WEBHOOK_SECRET."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        "NATS_URL",
        "REPLICATE_WEBHOOK_SECRET",
    )

    admin_port: Port = 9001
    http_port: Port = 8001
    replicate_webhook_secret: str = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQ="
