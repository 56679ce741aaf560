"""Settings of the webhook-ingest service, from the environment."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

import msgspec

from jobs_runtime.settings import Port, ServiceSettings, SettingsError
from webhook_ingest.verify import parse_secrets

MIB: Final = 1024 * 1024


class Settings(ServiceSettings, frozen=True):
    """The webhook-ingest's settings; `APP_ENV=prod` requires NATS_URL REPLICATE_WEBHOOK_SECRET."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        "NATS_URL",
        "REPLICATE_WEBHOOK_SECRET",
    )

    admin_port: Port = 9001
    http_port: Port = 8001
    # Comma-separated `whsec_...` secrets: add the new one, then retire the old one.
    replicate_webhook_secret: str = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQ="
    # The contract asks for at least 10 MiB: Replicate does not retry a 413, so a result
    # refused for its size is lost.
    webhook_max_bytes: Annotated[int, msgspec.Meta(ge=10 * MIB)] = 16 * MIB

    def check(self) -> None:
        super().check()
        try:
            parse_secrets(self.replicate_webhook_secret)
        except ValueError as exc:
            # The reason names the position of the bad secret, never its value.
            raise SettingsError(f"REPLICATE_WEBHOOK_SECRET: {exc}") from None
