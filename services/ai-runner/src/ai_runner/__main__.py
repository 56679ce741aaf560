"""Entry point of the `ai-runner` command: wires the Replicate adapter, the claims bucket and
JetStream to the handlers and consumes requested and cancel-requested jobs until SIGTERM."""

from __future__ import annotations

import functools
import logging

import msgspec

from ai_runner.adapters.claims import KvClaims, claims_bucket
from ai_runner.adapters.history import StreamHistory
from ai_runner.adapters.metrics import PrometheusObserver
from ai_runner.adapters.replicate import ReplicatePredictions
from ai_runner.config import Settings
from ai_runner.handlers import Runner, handle_cancel_requested, handle_requested
from jobs_proto.stream import ai_runner_consumer
from jobs_runtime.consumer import ConsumerLoop, retry_delay
from jobs_runtime.service import Service, run

log = logging.getLogger(__name__)

NAME = "ai-runner"


async def serve(service: Service[Settings]) -> None:
    """Consume until `service.stop` is set; the batch in hand is finished before returning.

    Readiness is the runtime's NATS check alone: Replicate being down makes jobs wait (they
    are retried), it is no reason to take the runner out of service.
    """
    settings = service.settings
    predictions = ReplicatePredictions(
        api_token=settings.replicate_api_token,
        base_url=settings.replicate_base_url,
        timeout_s=settings.replicate_timeout_s,
    )
    # Registered after the runtime's NATS drain, so it runs before it: no create is in flight
    # by then, since the consumer loop below has returned.
    service.stack.push_async_callback(predictions.aclose)
    if not settings.replicate_webhook_url:
        log.warning(
            "REPLICATE_WEBHOOK_URL is empty (polling mode), but polling is not implemented "
            "yet: jobs get predictions but never learn their outcome"
        )
    bucket = await claims_bucket(
        service.js, settings.jobs_stream, replicas=settings.stream_replicas
    )
    runner = Runner(
        predictions=predictions,
        events=service.publisher,
        claims=KvClaims(bucket),
        history=StreamHistory(service.js, settings.jobs_stream, settings.subjects),
        webhook_base=settings.replicate_webhook_url,
        binding_wait_s=settings.binding_wait_s,
        max_attempts=settings.max_attempts,
        observer=PrometheusObserver(),
    )
    spec = ai_runner_consumer(settings.subjects)
    if settings.consumer_ack_wait_s:
        spec = msgspec.structs.replace(spec, ack_wait_s=settings.consumer_ack_wait_s)
    consumer = ConsumerLoop(
        service.js,
        stream=settings.jobs_stream,
        spec=spec,
        subjects=settings.subjects,
        handlers={
            "requested": functools.partial(handle_requested, runner=runner),
            "cancel_requested": functools.partial(handle_cancel_requested, runner=runner),
        },
        delay=functools.partial(
            retry_delay, base_s=settings.retry_base_s, cap_s=settings.retry_cap_s
        ),
        on_ready=service.ready,
    )
    await consumer.run(service.stop)


def main() -> None:
    run(NAME, Settings, serve)


if __name__ == "__main__":
    main()
