"""Entry point of the `ai-runner` command: wires Replicate, the claims and limits buckets, the
job-store's stuck query and JetStream to the handlers; consumes requested and cancel-requested
jobs, relays streaming predictions' text into the output log (and their progress to core NATS)
and reconciles (or, without a webhook URL, polls) running predictions until SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid

import msgspec
from nats.aio.msg import Msg

from ai_runner.adapters.claims import KvClaims, claims_bucket
from ai_runner.adapters.history import StreamHistory
from ai_runner.adapters.jobstore import NatsStuckJobFinder
from ai_runner.adapters.limits import KvLimits, limits_bucket
from ai_runner.adapters.metrics import PrometheusObserver
from ai_runner.adapters.output import LogAppender
from ai_runner.adapters.reader import HttpPredictionReader
from ai_runner.adapters.relay import RelayConsumer
from ai_runner.adapters.replicate import ReplicatePredictions
from ai_runner.adapters.results import ObjectStoreResults
from ai_runner.adapters.streams import HttpStreamSource
from ai_runner.config import Settings
from ai_runner.fallback import FallbackPolicy, ReadPace
from ai_runner.handlers import (
    Runner,
    handle_cancel_requested,
    handle_requested,
    handle_started,
)
from ai_runner.handlers.progress import ProgressBoard
from ai_runner.handlers.relaying import Relay
from ai_runner.pacing import paced_by
from ai_runner.ports import Limits, PredictionReader, RelayObserver
from ai_runner.reconcile import Reconciler
from ai_runner.reconnect import ReconnectPolicy
from jobs_proto.job_types import LONGEST_DEADLINE_S
from jobs_proto.output import output_stream
from jobs_proto.stream import ConsumerSpec, ai_runner_consumer, relay_consumer
from jobs_proto.subjects import SubjectError, Subjects
from jobs_runtime import commands, periodic
from jobs_runtime.bus import ensure_stream
from jobs_runtime.consumer import ConsumerLoop, retry_delay
from jobs_runtime.output import OutputLog
from jobs_runtime.progress import CoreNatsProgress
from jobs_runtime.results import result_store
from jobs_runtime.service import Service, run_service

log = logging.getLogger(__name__)

NAME = "ai-runner"
# A stream is read at most this long after its prediction was announced: the longest job's
# deadline, and room for a late start.
RELAY_MARGIN_S = 600.0
# Any-type label of the limit waits counted where the consumer holds fetching back.
ANY_TYPE = "any"


def consumer_specs(settings: Settings) -> tuple[ConsumerSpec, ConsumerSpec, ConsumerSpec]:
    """Requested jobs, cancel requests and started predictions on durables of their own:
    requested jobs are fetched only as fast as the shared limits allow, and neither a cancel
    nor an orphan's cancel must wait behind them."""
    subjects = settings.subjects
    spec = ai_runner_consumer(subjects)
    if settings.consumer_ack_wait_s:
        spec = msgspec.structs.replace(spec, ack_wait_s=settings.consumer_ack_wait_s)
    requested = msgspec.structs.replace(spec, filter_subjects=(subjects.kind("requested"),))
    cancels = msgspec.structs.replace(
        spec,
        durable=f"{spec.durable}-cancels",
        filter_subjects=(subjects.kind("cancel_requested"),),
    )
    started = msgspec.structs.replace(
        spec,
        durable=f"{spec.durable}-started",
        filter_subjects=(subjects.kind("started"),),
    )
    return requested, cancels, started


def relay_spec(settings: Settings) -> ConsumerSpec:
    spec = relay_consumer(settings.subjects, max_streams=settings.relay_max_streams)
    if settings.consumer_ack_wait_s:
        spec = msgspec.structs.replace(spec, ack_wait_s=settings.consumer_ack_wait_s)
    return spec


async def build_relay(
    service: Service[Settings], observer: RelayObserver, reader: PredictionReader
) -> tuple[RelayConsumer, HttpStreamSource]:
    """The relay's consumer and its HTTP source (close it with `aclose` after the consumer
    returned); makes sure the output log's stream exists. `reader` reads the predictions whose
    stream is lost for good."""
    settings = service.settings
    spec = output_stream(
        settings.subjects,
        settings.jobs_stream,
        longest_deadline_s=LONGEST_DEADLINE_S,
        replicas=settings.stream_replicas,
        max_bytes=settings.output_stream_max_bytes,
    )
    await service.set_up(f"stream {spec.name}", lambda: ensure_stream(service.js, spec))
    source = HttpStreamSource(
        max_streams=settings.relay_max_streams, read_timeout_s=settings.relay_read_timeout_s
    )
    relay = Relay(
        source=source,
        log=LogAppender(OutputLog(service.js, spec.name, settings.subjects)),
        policy=ReconnectPolicy(
            base_s=settings.relay_retry_base_s,
            cap_s=settings.relay_retry_cap_s,
            max_failures=settings.relay_max_failures,
            max_age_s=LONGEST_DEADLINE_S + RELAY_MARGIN_S,
        ),
        observer=observer,
        progress=ProgressBoard(CoreNatsProgress(service.nc, settings.subjects), observer),
        reader=reader,
        fallback=FallbackPolicy(
            every_s=settings.relay_fallback_every_s,
            max_age_s=LONGEST_DEADLINE_S + RELAY_MARGIN_S,
        ),
        pace=ReadPace(settings.relay_fallback_reads_per_s),
    )
    consumer = RelayConsumer(
        service.nc,
        service.js,
        stream=settings.jobs_stream,
        spec=relay_spec(settings),
        subjects=settings.subjects,
        relay=relay,
        observer=observer,
        on_demand=settings.relay_on_demand,
    )
    return consumer, source


async def _release_on_end(service: Service[Settings], subjects: Subjects, limits: Limits) -> None:
    """Free a job's in-flight slot when its end goes by on the bus (webhook or poll). Core
    NATS may drop one; the slot then expires with its prediction's deadline."""

    async def ended(msg: Msg) -> None:
        try:
            _, job_id = subjects.parse(msg.subject)
        except SubjectError:
            return
        await _release(limits, job_id)

    for kind in ("completed", "failed"):
        await service.nc.subscribe(subjects.kind(kind), cb=ended)


async def _release(limits: Limits, job_id: uuid.UUID) -> None:
    try:
        await limits.release(job_id)
    except Exception:
        log.warning("could not free an in-flight slot; it expires by itself", exc_info=True)


async def serve(service: Service[Settings]) -> None:
    """Consume and reconcile until `service.stop` is set; the batch in hand is finished first.

    Readiness is the runtime's NATS check alone: Replicate being down makes jobs wait (they
    are retried), it is no reason to take the runner out of service.
    """
    settings = service.settings
    predictions = ReplicatePredictions(
        api_token=settings.replicate_api_token,
        base_url=settings.replicate_base_url,
        timeout_s=settings.replicate_timeout_s,
    )
    reader = HttpPredictionReader(
        api_token=settings.replicate_api_token,
        base_url=settings.replicate_base_url,
        timeout_s=settings.replicate_timeout_s,
    )
    # Registered after the runtime's NATS drain, so they run before it: no call is in flight
    # by then, since the loops below have returned.
    service.stack.push_async_callback(predictions.aclose)
    service.stack.push_async_callback(reader.aclose)
    observer = PrometheusObserver()
    relay, stream_source = await build_relay(service, observer, reader)
    service.stack.push_async_callback(stream_source.aclose)
    polling = not settings.replicate_webhook_url
    if polling:
        log.info("REPLICATE_WEBHOOK_URL is empty: polling mode, predictions are read by polling")
    replicas = settings.stream_replicas
    claims = KvClaims(
        await service.set_up(
            "claims bucket",
            lambda: claims_bucket(
                service.js,
                settings.jobs_stream,
                replicas=replicas,
                max_bytes=settings.claims_bucket_max_bytes,
            ),
        )
    )
    limits = KvLimits(
        await service.set_up(
            "limits bucket",
            lambda: limits_bucket(
                service.js,
                settings.jobs_stream,
                replicas=replicas,
                max_bytes=settings.limits_bucket_max_bytes,
            ),
        ),
        creations_per_window=settings.creations_per_window,
        window_s=settings.creation_window_s,
        max_in_flight=settings.max_in_flight,
        observer=observer,
    )
    runner = Runner(
        predictions=predictions,
        events=service.publisher,
        claims=claims,
        history=StreamHistory(service.js, settings.jobs_stream, settings.subjects),
        webhook_base=settings.replicate_webhook_url,
        binding_wait_s=settings.binding_wait_s,
        max_attempts=settings.max_attempts,
        observer=observer,
        limits=limits,
    )
    reconciler = Reconciler(
        finder=NatsStuckJobFinder(service.nc, settings.subjects),
        reader=reader,
        predictions=predictions,
        events=service.publisher,
        claims=claims,
        results=ObjectStoreResults(
            await service.set_up(
                "results store",
                lambda: result_store(
                    service.js,
                    settings.jobs_stream,
                    replicas=replicas,
                    max_bytes=settings.results_store_max_bytes,
                ),
            )
        ),
        older_than_s=settings.poll_min_s if polling else settings.reconcile_after_s,
        min_interval_s=settings.poll_min_s,
        max_interval_s=settings.poll_max_s if polling else settings.reconcile_after_s,
        concurrency=settings.reconcile_concurrency,
        max_reads_per_s=settings.replicate_reads_per_s,
        observer=observer,
        limits=limits,
    )
    await _release_on_end(service, settings.subjects, limits)
    delay = functools.partial(retry_delay, base_s=settings.retry_base_s, cap_s=settings.retry_cap_s)
    requested_spec, cancel_spec, started_spec = consumer_specs(settings)
    requested = ConsumerLoop(
        service.js,
        stream=settings.jobs_stream,
        spec=requested_spec,
        subjects=settings.subjects,
        handlers={"requested": functools.partial(handle_requested, runner=runner)},
        delay=delay,
        pace=paced_by(limits.capacity, functools.partial(observer.limit_waited, ANY_TYPE)),
    )
    cancels = ConsumerLoop(
        service.js,
        stream=settings.jobs_stream,
        spec=cancel_spec,
        subjects=settings.subjects,
        handlers={"cancel_requested": functools.partial(handle_cancel_requested, runner=runner)},
        delay=delay,
    )
    started = ConsumerLoop(
        service.js,
        stream=settings.jobs_stream,
        spec=started_spec,
        subjects=settings.subjects,
        handlers={"started": functools.partial(handle_started, runner=runner)},
        delay=delay,
    )
    every_s = settings.poll_min_s if polling else settings.reconcile_interval_s

    async def ready_when_all() -> None:
        for loop in (requested, cancels, started, relay):
            await loop.ready.wait()
        service.ready()

    await asyncio.gather(
        requested.run(service.stop),
        cancels.run(service.stop),
        started.run(service.stop),
        relay.run(service.stop),
        ready_when_all(),
        # A sweep answering "more" (the job-store had more than one round holds) runs again at once.
        periodic.every(every_s, service.stop, "reconciling", reconciler.sweep, first_at_once=True),
    )


def main() -> None:
    commands.main(NAME, lambda: run_service(NAME, Settings, serve))


if __name__ == "__main__":
    main()
