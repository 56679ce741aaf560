"""The NATS edge of every service: connecting, idempotent stream and consumer setup, publishing."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, Final

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.kv import KeyValue

from jobs_proto.events import JobEvent, encode_event
from jobs_proto.stream import ConsumerSpec, StreamSpec
from jobs_proto.subjects import MSG_ID_HEADER, Subjects, message_id
from jobs_runtime import tracing
from jobs_runtime.nodes import NodeWatch
from jobs_runtime.settings import NatsAuth

log = logging.getLogger(__name__)

_STREAM_NAME_IN_USE = 10058


def _tls_context(ca_file: str) -> ssl.SSLContext:
    """Verifies the server's certificate (and host name) against `ca_file` alone."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)


def auth_options(auth: NatsAuth | None) -> dict[str, Any]:
    """`nats.connect`'s keyword arguments for who connects and which CA the server must show."""
    if auth is None:
        return {}
    options: dict[str, Any] = {}
    if auth.user:
        options |= {"user": auth.user, "password": auth.password}
    if auth.creds:
        options["user_credentials"] = auth.creds
    if auth.tls_ca:
        options["tls"] = _tls_context(auth.tls_ca)
    return options


DRAIN_TIMEOUT_S: Final = 5.0


async def connect(
    url: str,
    name: str,
    stop: asyncio.Event | None = None,
    *,
    auth: NatsAuth | None = None,
    inbox: str | None = None,
    nodes: NodeWatch | None = None,
) -> NATS:
    """Connect, retrying until NATS answers or `stop` is set; reconnects forever afterwards.

    `auth` says who the service is and which CA the server's certificate must chain to;
    `inbox` is the reply-subject prefix its NATS user may subscribe to
    (`jobs_proto.permissions.inbox_prefix`); `nodes` picks the node of each reconnect,
    passing over one it left because it was cut off from its cluster.
    """

    async def on_error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    delay = 0.2
    while True:
        try:
            return await nats.connect(
                servers=url.split(","),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                # A drain takes milliseconds; one stuck behind a reconnect (a node cut off,
                # say) must not outlast the shutdown grace: after this it is closed instead.
                drain_timeout=DRAIN_TIMEOUT_S,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                **({} if inbox is None else {"inbox_prefix": inbox}),
                **({} if nodes is None else {"reconnect_to_server_handler": nodes.choose}),
                **auth_options(auth),
            )
        except Exception as exc:
            if stop is not None and stop.is_set():
                raise
            log.warning("nats not reachable, retrying in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def server_has_all(nc: NATS) -> None:
    """Return once the server has processed everything this connection sent before the call
    (a subscription is in place, a publish delivered to those listening).

    One `flush()` is not enough with nats-py 2.16: it writes its PING straight to the socket
    while a SUB or PUB may still wait in the client's pending buffer for the flusher task, so
    the PONG can come back before the server has seen them (a request from another
    connection then missed a subscription that "was ready"). By the time the first PONG is
    read the flusher has written them, so the second PING follows them on the wire."""
    await nc.flush()
    await nc.flush()


def stream_config(spec: StreamSpec) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=js_api.RetentionPolicy.LIMITS,
        storage=js_api.StorageType.FILE if spec.storage == "file" else js_api.StorageType.MEMORY,
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=spec.replicas,
        max_msg_size=spec.max_msg_size,
        max_bytes=spec.max_bytes,
        discard=js_api.DiscardPolicy.NEW if spec.discard == "new" else js_api.DiscardPolicy.OLD,
        allow_direct=spec.allow_direct,
    )


def consumer_config(spec: ConsumerSpec) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        name=spec.durable,
        durable_name=spec.durable,
        filter_subjects=list(spec.filter_subjects),
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_ack_pending=spec.max_ack_pending,
        max_deliver=spec.max_deliver,
    )


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> js_api.StreamInfo:
    """Create the stream, or bring an existing one to `spec`; safe to run from every replica."""
    config = stream_config(spec)
    try:
        return await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _STREAM_NAME_IN_USE:
            raise
    log.info("updating stream %s to its configuration", spec.name)
    return await js.update_stream(config)


async def ensure_key_value(
    js: JetStreamContext,
    name: str,
    *,
    max_bytes: int,
    ttl_s: float | None = None,
    replicas: int = 1,
    direct: bool = False,
) -> KeyValue:
    """A KV bucket with one value per key, created by the first replica that needs it (the same
    configuration from several at once is accepted by JetStream); `ttl_s` None: kept forever.
    A bucket that exists is brought to `replicas`, `max_bytes` and `ttl_s` (`reconcile_store`),
    as `ensure_stream` brings a stream: JetStream keeps a bucket as it was first created.

    `direct`: reads are one request answered with the raw entry (`$JS.API.DIRECT.GET`) instead
    of a JetStream API call answering base64 inside JSON. A bucket made before without it keeps
    API gets (`KeyValue` asks its stream which to use); a service may create a stream, not
    always update it. On an R3 stream any replica may answer a direct get, a lagging one too:
    only for buckets whose every write is a compare-and-set."""
    try:
        kv = await js.key_value(name)
    except BucketNotFoundError:
        pass
    else:
        await reconcile_store(
            js, f"KV_{name}", replicas=replicas, max_bytes=max_bytes, max_age_s=ttl_s
        )
        return kv
    return await js.create_key_value(
        js_api.KeyValueConfig(
            bucket=name,
            history=1,
            ttl=ttl_s,
            max_bytes=max_bytes,
            replicas=replicas,
            storage=js_api.StorageType.FILE,
            direct=direct,
        )
    )


async def reconcile_store(
    js: JetStreamContext,
    stream: str,
    *,
    replicas: int,
    max_bytes: int,
    max_age_s: float | None,
) -> js_api.StreamInfo:
    """Bring the stream under a KV bucket (`KV_<bucket>`) or Object Store (`OBJ_<name>`) to the
    replica count and limits asked for, keeping the rest of its configuration; JetStream moves
    the data to new replicas itself. Without a change, nothing is sent."""
    info = await js.stream_info(stream)
    config = info.config
    age = max_age_s or 0.0
    if (
        config.num_replicas == replicas
        and config.max_bytes == max_bytes
        and abs((config.max_age or 0.0) - age) < 1e-3
    ):
        return info
    log.info(
        "updating %s to its configuration",
        stream,
        extra={
            "replicas": f"{config.num_replicas} -> {replicas}",
            "max_bytes": f"{config.max_bytes} -> {max_bytes}",
        },
    )
    return await js.update_stream(
        config.evolve(num_replicas=replicas, max_bytes=max_bytes, max_age=age)
    )


async def ensure_consumer(
    js: JetStreamContext, stream: str, spec: ConsumerSpec
) -> js_api.ConsumerInfo:
    """Create the durable consumer; with the same configuration this is a no-op."""
    return await js.add_consumer(stream, consumer_config(spec))


class EventPublisher:
    """Publishes job events to JetStream with their deterministic `Nats-Msg-Id`."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, timeout: float = 5.0) -> None:
        self._js = js
        self._subjects = subjects
        self._timeout = timeout

    async def publish(self, event: JobEvent) -> js_api.PubAck:
        """Returns once JetStream has stored the event (or recognised it as a duplicate).

        Traced, the publish is a producer span of the job's trace and its `traceparent` goes
        in the message headers, for the consumers' spans to follow from."""
        headers = {MSG_ID_HEADER: message_id(event)}
        if not tracing.ENABLED:
            return await self._send(event, headers)
        attributes = {"messaging.system": "nats", "job.id": str(event.job_id)}
        with tracing.span(f"publish job.{event.kind}", kind="producer", attributes=attributes):
            return await self._send(event, tracing.inject(headers))

    async def _send(self, event: JobEvent, headers: dict[str, str]) -> js_api.PubAck:
        return await self._js.publish(
            self._subjects.event(event), encode_event(event), timeout=self._timeout, headers=headers
        )
