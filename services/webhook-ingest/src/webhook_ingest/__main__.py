"""Entry point of the `webhook-ingest` command: the webhook endpoint under the shared runtime."""

from __future__ import annotations

import logging

from jobs_runtime.service import Service, run
from webhook_ingest.adapters.bus import CoreNatsProgress, JetStreamEvents
from webhook_ingest.adapters.http import webhook_app
from webhook_ingest.config import Settings
from webhook_ingest.verify import WebhookVerifier, parse_secrets

log = logging.getLogger(__name__)


async def serve_webhooks(service: Service[Settings]) -> None:
    """Answer webhooks on `HTTP_PORT` until told to stop, then finish the ones in hand."""
    settings = service.settings
    app = webhook_app(
        verifier=WebhookVerifier(parse_secrets(settings.replicate_webhook_secret)),
        events=JetStreamEvents(service.nc, service.publisher),
        progress=CoreNatsProgress(service.nc, settings.subjects),
        max_bytes=settings.webhook_max_bytes,
    )

    async def jetstream_ready() -> None:
        # Connected is not enough: a `200` needs JetStream to store into this stream. While
        # disconnected, fail at once instead of waiting out the probe's timeout.
        if not service.nc.is_connected:
            raise ConnectionError("not connected to NATS")
        await service.js.stream_info(settings.jobs_stream)

    service.readiness.add("jetstream", jetstream_ready)
    await service.serve_http(app, settings.http_port)


def main() -> None:
    run("webhook-ingest", Settings, serve_webhooks)


if __name__ == "__main__":
    main()
