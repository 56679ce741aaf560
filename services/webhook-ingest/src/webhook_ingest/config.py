"""Settings of the webhook-ingest service and of its `fetch-secret` command, from the environment.

Besides the secrets and the body limit, the endpoint's defences against abuse are set here:
`WEBHOOK_RATE_PER_S` (50; 0: no limit) and `WEBHOOK_RATE_BURST` (100) per source address,
`TRUSTED_PROXY_HOPS` (0: the peer's address is the source), `WEBHOOK_MAX_LARGE_BODIES` (4 bodies
over 1 MiB read at once), `WEBHOOK_MAX_LARGE_BODIES_PER_SOURCE` (2 of them from one address) and
`WEBHOOK_READ_TIMEOUT_S` (10 s to receive a whole body).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

import msgspec

from jobs_runtime.secrets import Secret
from jobs_runtime.settings import EnvSettings, Port, ServiceSettings, SettingsError
from webhook_ingest.verify import parse_secrets

MIB: Final = 1024 * 1024


class Settings(ServiceSettings, frozen=True):
    """The webhook-ingest's settings; `APP_ENV=prod` requires NATS_URL REPLICATE_WEBHOOK_SECRET."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.required_in_prod,
        "REPLICATE_WEBHOOK_SECRET",
    )

    admin_port: Port = 9001
    http_port: Port = 8001
    # Comma-separated `whsec_...` secrets: add the new one, then retire the old one.
    replicate_webhook_secret: Secret = "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQ="
    # The contract asks for at least 10 MiB: Replicate does not retry a 413, so a result
    # refused for its size is lost.
    webhook_max_bytes: Annotated[int, msgspec.Meta(ge=10 * MIB)] = 16 * MIB
    # Per source address, before any signature is checked: HMAC over many megabytes is the
    # cheapest way to make this service burn CPU. Replicate sends every prediction's webhooks
    # (start, output every 500 ms, completed) from a few addresses, so at its 10 creations a
    # second one address can carry hundreds a second: the default leaves room for that.
    webhook_rate_per_s: Annotated[float, msgspec.Meta(ge=0)] = 1000.0
    webhook_rate_burst: Annotated[int, msgspec.Meta(ge=1)] = 2000
    # How many proxies of ours append to `X-Forwarded-For`; 0: the header is ignored, since
    # anybody can send it.
    trusted_proxy_hops: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    # Bodies over 1 MiB in memory at once; the rest wait for Replicate's retry (`503`). Only a
    # request with all signature headers and a fresh timestamp takes one, but anybody can make
    # those up: one address may hold at most half of them, so an attacker needs two addresses
    # to fill the slots, and a few more than one of Replicate's senders may send large
    # results at once (a third waits for the retry).
    webhook_max_large_bodies: Annotated[int, msgspec.Meta(ge=1)] = 4
    webhook_max_large_bodies_per_source: Annotated[int, msgspec.Meta(ge=1)] = 2
    # A body must arrive whole within this time (`408` otherwise): a trickling sender would
    # otherwise hold a large-body slot, and its memory, for as long as it likes. 16 MiB takes
    # about 1.5 s at 100 Mbit/s, Replicate sends from data centres: 10 s leaves room for a
    # slow path while a slot is held only a third as long as before.
    webhook_read_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0

    def check(self) -> None:
        super().check()
        try:
            parse_secrets(self.replicate_webhook_secret)
        except ValueError as exc:
            # The reason names the position of the bad secret, never its value.
            raise SettingsError(f"REPLICATE_WEBHOOK_SECRET: {exc}") from None


class FetchSecretSettings(EnvSettings, frozen=True):
    """What `webhook-ingest fetch-secret` reads: Replicate's address and an API token.

    Only this one-shot command holds a token; the service itself needs none.
    """

    required_in_prod: ClassVar[tuple[str, ...]] = ("REPLICATE_API_TOKEN",)

    # Dev defaults point at the simulator `make run` starts.
    replicate_base_url: str = "http://127.0.0.1:8010"
    replicate_api_token: Secret = "dev-only-replicate-token"
    replicate_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0

    def check(self) -> None:
        super().check()
        scheme, _, rest = self.replicate_base_url.partition("://")
        if scheme not in ("http", "https") or not rest.strip("/"):
            raise SettingsError("REPLICATE_BASE_URL: must be an http(s) URL")
        if not self.replicate_api_token.strip():
            raise SettingsError("REPLICATE_API_TOKEN: must not be empty")
