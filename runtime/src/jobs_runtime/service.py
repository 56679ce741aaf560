"""A service's life: settings, logs, NATS, the stream, the admin port, then its work until SIGTERM.

On SIGTERM (or Ctrl-C) readiness fails at once, the service's `main` sees `stop` set, stops
fetching and finishes what it holds; then the NATS connection is drained (pending acks and
publishes flushed) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import uvloop
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from jobs_proto.permissions import inbox_prefix
from jobs_proto.stream import jobs_stream
from jobs_runtime import tracing
from jobs_runtime.admin import Readiness, admin_app
from jobs_runtime.bus import EventPublisher, connect, ensure_stream
from jobs_runtime.commands import FAILED, OK, load_or_exit
from jobs_runtime.http import HttpServer
from jobs_runtime.nodes import NodeWatch
from jobs_runtime.settings import ServiceSettings
from jobs_runtime.setup import until_set_up

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Service(Generic[S]):
    """What a service's `main` is handed: its settings and the connections the runtime owns."""

    name: str
    settings: S
    nc: NATS
    js: JetStreamContext
    publisher: EventPublisher
    readiness: Readiness
    stop: asyncio.Event
    stack: AsyncExitStack

    async def set_up(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Declare a stream, bucket or Object Store at start, waiting (not ready) while JetStream
        cannot take it yet, up to `JETSTREAM_SETUP_TIMEOUT_S`."""
        return await until_set_up(
            what,
            attempt,
            within_s=self.settings.jetstream_setup_timeout_s,
            stop=self.stop,
        )

    def ready(self) -> None:
        """Called by the service once it takes work: from then on `/readyz` runs its checks."""
        self.readiness.mark_started()

    async def serve_http(self, app: Any, port: int) -> None:
        """Serve `app` on `port` until `stop`, ready once listening. On the way out uvicorn
        stops accepting and lets requests in hand finish (their publishes included) before the
        runtime drains the NATS connection."""
        server = HttpServer(app, "0.0.0.0", port)
        await server.start()
        self.ready()
        log.info("http listening", extra={"http_port": server.port})
        try:
            await self.stop.wait()
        finally:
            await server.stop()


# A service's work; it may answer an exit code (`commands.REFUSED`), None meaning `OK`.
ServiceMain = Callable[[Service[S]], Coroutine[Any, Any, int | None]]


def run_service(name: str, settings_type: type[S], main: ServiceMain[S]) -> int:
    """Serve until SIGTERM: the exit code of a service's console command without arguments."""
    settings = load_or_exit(name, settings_type)
    tracing.start(name, settings.otel_exporter_otlp_endpoint, settings.otel_service_name)
    try:
        # uvloop: the same asyncio, with less CPU per message and per request.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(serve(name, settings, main))
    except Exception:
        log.exception("crashed")
        return FAILED
    finally:
        # The spans of the last jobs in hand, exported before the process exits.
        tracing.stop()
    return OK if code is None else code


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _drain(nc: NATS) -> None:
    if nc.is_closed:
        return
    try:
        await nc.drain()
    except Exception as exc:
        log.warning("drain failed: %r", exc)
        await nc.close()


async def serve(name: str, settings: S, main: ServiceMain[S]) -> int | None:
    stop = asyncio.Event()
    readiness = Readiness()

    def on_signal() -> None:
        readiness.stopping = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with AsyncExitStack() as stack:
            admin = HttpServer(admin_app(readiness), "0.0.0.0", settings.admin_port)
            await admin.start()
            stack.push_async_callback(admin.stop)

            nodes = NodeWatch(settings.nats_node_probe_s) if settings.nats_node_probe_s else None
            nc = await connect(
                settings.nats_url,
                name,
                stop,
                auth=settings.nats_auth,
                inbox=inbox_prefix(name),
                nodes=nodes,
            )
            stack.push_async_callback(_drain, nc)
            if nodes is not None:
                watching = asyncio.create_task(nodes.run(nc, stop))
                stack.push_async_callback(_stopped, watching)
            js = nc.jetstream()
            spec = jobs_stream(
                settings.subjects,
                name=settings.jobs_stream,
                replicas=settings.stream_replicas,
                max_age_s=settings.stream_max_age_s,
                max_bytes=settings.jobs_stream_max_bytes,
            )
            # A first apply starts the services with the NATS nodes: until all of them are up an
            # R3 stream cannot be placed, and the service waits here, not ready.
            await until_set_up(
                f"stream {spec.name}",
                lambda: ensure_stream(js, spec),
                within_s=settings.jetstream_setup_timeout_s,
                stop=stop,
            )

            async def nats_ready() -> None:
                if not nc.is_connected:
                    raise ConnectionError("not connected to NATS")

            readiness.add("nats", nats_ready)
            service = Service(
                name=name,
                settings=settings,
                nc=nc,
                js=js,
                publisher=EventPublisher(js, settings.subjects),
                readiness=readiness,
                stop=stop,
                stack=stack,
            )
            log.info("started", extra={"admin_port": admin.port})
            code = await _run_main(main(service), stop, settings.shutdown_grace_s)
            readiness.stopping = True
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return code


async def _run_main(
    work: Coroutine[Any, Any, int | None], stop: asyncio.Event, grace_s: float
) -> int | None:
    """Run the service's work; once `stop` is set, give it `grace_s` to finish, then cancel it."""
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("stopping", extra={"grace_s": grace_s})
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                log.warning("work still in hand after the grace period, cancelling it")
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return None
        return task.result()  # a service whose work crashed must not exit 0
    finally:
        stopping.cancel()


async def idle(service: Service[S]) -> None:
    """The `main` of a service with nothing to do but answer its admin port."""
    service.ready()
    await service.stop.wait()
