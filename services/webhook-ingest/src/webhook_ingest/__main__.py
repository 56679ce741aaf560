"""Entry point of the `webhook-ingest` command: the webhook endpoint under the shared runtime, or
`fetch-secret`.

`webhook-ingest` serves `POST /api/webhooks/replicate` on `HTTP_PORT` until SIGTERM; it holds
no Replicate token. `webhook-ingest fetch-secret` asks Replicate (`REPLICATE_BASE_URL`, with
`REPLICATE_API_TOKEN` read for this command only) for the webhook signing key and prints the
`whsec_...` key alone on stdout, ready for `REPLICATE_WEBHOOK_SECRET`; on failure one line on
stderr and exit 1 (2 for a configuration or usage error).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final, NoReturn

from jobs_runtime import commands
from jobs_runtime.commands import FAILED, OK, Command, load_or_exit
from jobs_runtime.progress import CoreNatsProgress
from jobs_runtime.red import with_red_metrics
from jobs_runtime.service import Service, run_service
from webhook_ingest.adapters.bus import (
    JetStreamEvents,
    LoggedOutput,
    NatsWebhookParking,
    ObjectStoreResults,
)
from webhook_ingest.adapters.http import webhook_app
from webhook_ingest.adapters.metrics import HTTP_REQUESTS, HTTP_SECONDS, PrometheusObserver
from webhook_ingest.adapters.replicate import SecretFetchError, fetch_webhook_secret
from webhook_ingest.config import FetchSecretSettings, Settings
from webhook_ingest.limits import IngressLimits
from webhook_ingest.verify import WebhookVerifier, parse_secrets

NAME: Final = "webhook-ingest"
log = logging.getLogger("webhook_ingest")


async def serve_webhooks(service: Service[Settings]) -> None:
    """Answer webhooks on `HTTP_PORT` until told to stop, then finish the ones in hand."""
    settings = service.settings
    app = webhook_app(
        verifier=WebhookVerifier(parse_secrets(settings.replicate_webhook_secret)),
        events=JetStreamEvents(service.nc, service.publisher),
        progress=CoreNatsProgress(service.nc, settings.subjects),
        # As many replicas as the stream, so a result is as durable as the event naming it.
        results=ObjectStoreResults(
            service.nc,
            service.js,
            settings.jobs_stream,
            replicas=settings.stream_replicas,
            max_bytes=settings.results_store_max_bytes,
        ),
        parking=NatsWebhookParking(
            service.nc,
            service.js,
            settings.subjects,
            settings.jobs_stream,
            replicas=settings.stream_replicas,
            max_bytes=settings.parked_stream_max_bytes,
        ),
        output=LoggedOutput(
            service.nc,
            settings.subjects,
            settings.jobs_stream,
            replicas=settings.stream_replicas,
            max_bytes=settings.output_stream_max_bytes,
        ),
        max_bytes=settings.webhook_max_bytes,
        observer=PrometheusObserver(),
        limits=IngressLimits(
            rate_per_s=settings.webhook_rate_per_s,
            burst=settings.webhook_rate_burst,
            trusted_proxy_hops=settings.trusted_proxy_hops,
            max_large_bodies=settings.webhook_max_large_bodies,
            max_large_bodies_per_source=settings.webhook_max_large_bodies_per_source,
            read_timeout_s=settings.webhook_read_timeout_s,
        ),
    )

    async def jetstream_ready() -> None:
        # Connected is not enough: a `200` needs JetStream to store into this stream. While
        # disconnected, fail at once instead of waiting out the probe's timeout.
        if not service.nc.is_connected:
            raise ConnectionError("not connected to NATS")
        await service.js.stream_info(settings.jobs_stream)

    service.readiness.add("jetstream", jetstream_ready)
    await service.serve_http(with_red_metrics(app, HTTP_REQUESTS, HTTP_SECONDS), settings.http_port)


def fetch_secret(_: argparse.Namespace) -> int:
    """`webhook-ingest fetch-secret`: the key on stdout, or one line on stderr."""
    settings = load_or_exit(NAME, FetchSecretSettings)
    try:
        key = fetch_webhook_secret(
            settings.replicate_base_url,
            settings.replicate_api_token,
            timeout_s=settings.replicate_timeout_s,
        )
    except SecretFetchError as exc:
        log.error("webhook secret not fetched: %s", exc)
        return FAILED
    # The command's one output, meant for `REPLICATE_WEBHOOK_SECRET=$(webhook-ingest fetch-secret)`.
    sys.stdout.write(key + "\n")
    return OK


def main() -> NoReturn:
    commands.main(
        NAME,
        lambda: run_service(NAME, Settings, serve_webhooks),
        [
            Command(
                "fetch-secret",
                "print Replicate's webhook signing key (whsec_...) for REPLICATE_WEBHOOK_SECRET",
                fetch_secret,
            )
        ],
    )


if __name__ == "__main__":
    main()
