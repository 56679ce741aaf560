"""The consumer loop: fetch a batch from a durable consumer, hand each event to its handler, ack.

While messages keep coming it fetches batches with a short expiry; once a fetch finds nothing
it waits for the next single message with one longer pull request, so an idle consumer costs
NATS and the process a request every `idle_timeout_s` rather than two a second. That wait ends
at once when the service stops; a request a restarted server forgot costs at most
`idle_timeout_s` of waiting.

A handler that raises gets its message back after a growing delay (or after the delay it asked
for with `RetryLater`); a kind this release does not
know stays unacknowledged, so a newer replica can take it; a body that cannot be an event is
terminated (it stays in the stream for inspection) instead of blocking the consumer forever.

By default a fetched batch is handled whole before the next fetch. With `overlap`, the next
fetch goes out as soon as a batch is handed over, so a message that arrives while a slow batch
is handled reaches its handler at once instead of waiting for that batch and a fetch's round
trip; up to `max_in_hand` messages are handled at a time. Handlers are still entered in stream
order (each message's handler starts, up to its first await, before the next one's), so a
handler that queues work in call order (the job-store's batching applier) keeps that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, DrainTimeoutError
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram

from jobs_proto.events import decode_event
from jobs_proto.stream import ConsumerSpec
from jobs_proto.subjects import SubjectError, Subjects
from jobs_runtime import tracing
from jobs_runtime.bus import ensure_consumer
from jobs_runtime.pacing import Pace
from jobs_runtime.retry import RetryLater

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[None]]
# Given a message that can never be an event, its reason and a one-line detail; may set it
# aside (a dead-letter stream) before the loop terminates it. Raising keeps it for later.
RejectHook = Callable[[Msg, str, str], Awaitable[None]]


# Why a message was rejected, for logs, metrics and whoever sets rejected messages aside.
BAD_SUBJECT = "bad_subject"
UNDECODABLE = "undecodable"
SUBJECT_MISMATCH = "subject_mismatch"

MESSAGES = Counter(
    "jobs_consumer_messages",
    "Messages a consumer handled, by kind and outcome",
    ["consumer", "kind", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "jobs_consumer_handler_seconds", "Time a handler took per message", ["consumer", "kind"]
)


def _retrieve(task: asyncio.Future[Any]) -> None:
    # An abandoned fetch's outcome, read so asyncio never reports it as unretrieved.
    if not task.cancelled():
        task.exception()


def retry_delay(delivered: int, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Exponential backoff with full jitter, by how often the message was delivered so far."""
    ceiling = min(cap_s, base_s * 2 ** max(0, delivered - 1))
    return random.uniform(ceiling / 2, ceiling)


class _StillWorking:
    """Tells JetStream a message is still being worked on (`+WPI`) every `every_s` while its
    handler runs, so a handler longer than ack_wait (one holding a created prediction's id
    until NATS answers again) is not handed to another replica meanwhile. A replica that is
    stopped or gone stops telling, and its messages are redelivered as before.

    Most handlers end long before the first tick: then it costs one timer, never a message.
    """

    __slots__ = ("_every_s", "_msg", "_sending", "_timer")

    def __init__(self, msg: Msg, every_s: float) -> None:
        self._msg = msg
        self._every_s = every_s
        self._sending: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            every_s, self._tick
        )

    def _tick(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._tell())
        self._timer = asyncio.get_running_loop().call_later(self._every_s, self._tick)

    async def _tell(self) -> None:
        # Best effort: a node that does not answer now is the usual reason the handler is slow.
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class ConsumerLoop:
    """Runs handlers over one durable consumer until told to stop."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        spec: ConsumerSpec,
        subjects: Subjects,
        handlers: Mapping[str, Handler],
        batch: int = 64,
        fetch_timeout_s: float = 1.0,
        idle_timeout_s: float = 5.0,
        delay: Callable[[int], float] = retry_delay,
        on_ready: Callable[[], None] | None = None,
        on_reject: RejectHook | None = None,
        pace: Pace | None = None,
        overlap: bool = False,
        max_in_hand: int | None = None,
    ) -> None:
        self._js = js
        self._stream = stream
        self._spec = spec
        self._subjects = subjects
        self._handlers = handlers
        self._batch = batch
        self._fetch_timeout_s = fetch_timeout_s
        # Bounds how long a pull request the server lost (a restart, a clustered consumer's
        # leader moving) can leave the loop waiting; each round costs a request and its expiry.
        self._idle_timeout_s = max(idle_timeout_s, fetch_timeout_s)
        self._delay = delay
        self.ready = asyncio.Event()
        self._on_ready = on_ready
        self._on_reject = on_reject
        self._pace = pace
        self._overlap = overlap
        self._max_in_hand = max(1, max_in_hand or 2 * batch)
        # With `overlap`: messages whose handling has started and not yet settled.
        self._in_hand: set[asyncio.Task[None]] = set()
        # Metric children by label values: `labels()` costs a lock and a lookup per message.
        self._timers: dict[str, Histogram] = {}
        self._counters: dict[tuple[str, str], Counter] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and handle until `stop` is set, then finish the batch in hand and return."""
        await ensure_consumer(self._js, self._stream, self._spec)
        subscription = await self._js.pull_subscribe_bind(
            durable=self._spec.durable, stream=self._stream
        )
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready()
        stopping = asyncio.ensure_future(stop.wait())
        pause = 0.1
        idle = False
        try:
            while not stop.is_set():
                try:
                    batch = self._batch
                    if self._overlap:
                        room = self._max_in_hand - len(self._in_hand)
                        if room <= 0:
                            # As many in hand as allowed: fetch again once one settles.
                            await asyncio.wait(
                                {*self._in_hand, stopping}, return_when=asyncio.FIRST_COMPLETED
                            )
                            continue
                        batch = min(batch, room)
                    if self._pace is not None:
                        allowance = await self._pace()
                        if allowance.count <= 0:
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), allowance.wait_s)
                            continue
                        batch = min(batch, allowance.count)
                    if idle:
                        found = await self._next_when_idle(subscription, stopping)
                        if found is None:
                            return  # stopping
                        messages = found
                    else:
                        messages = await subscription.fetch(batch, timeout=self._fetch_timeout_s)
                except TimeoutError:
                    # Nothing came (nats-py raises its own subclass, or the builtin): wait for
                    # the next message with one long request from now on.
                    idle = True
                    continue
                except (ConnectionClosedError, DrainTimeoutError):
                    return
                except Exception as exc:
                    # NATS restarting or JetStream not ready yet: wait and ask again.
                    log.warning("fetch failed, retrying: %r", exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                idle = False
                pause = 0.1
                if self._overlap:
                    # Tasks start in creation order, so handlers are entered in stream order.
                    for message in messages:
                        task = asyncio.ensure_future(self._handle_safely(message))
                        self._in_hand.add(task)
                        task.add_done_callback(self._in_hand.discard)
                else:
                    await asyncio.gather(*(self._handle_safely(m) for m in messages))
        except asyncio.CancelledError:
            # Cancelled past the grace period: the messages in hand go back at once (each
            # handler's cancellation naks its message), as they do from a cancelled gather.
            for task in self._in_hand:
                task.cancel()
            raise
        finally:
            if self._in_hand:
                # Stopping: finish what is in hand, as the non-overlapping loop finishes its batch.
                await asyncio.gather(*self._in_hand, return_exceptions=True)
            stopping.cancel()
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _next_when_idle(
        self,
        subscription: JetStreamContext.PullSubscription,
        stopping: asyncio.Future[Any],
    ) -> list[Msg] | None:
        """The next message, from a request for exactly one (so none is left lingering on the
        server once it is answered); None when `stopping` came first."""
        fetch = asyncio.ensure_future(subscription.fetch(1, timeout=self._idle_timeout_s))
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not fetch.done():
                # Its request dies with the subscription: the server drops a pull request
                # nobody listens to any more.
                fetch.cancel()
                fetch.add_done_callback(_retrieve)
        if not fetch.done() or fetch.cancelled():
            return None
        return fetch.result()

    async def _handle_safely(self, msg: Msg) -> None:
        try:
            await self._handle(msg)
        except asyncio.CancelledError:
            # Shut down past the grace period: hand the message back at once, so another
            # replica takes it now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            # An ack or nak that could not be sent (NATS gone): JetStream redelivers the
            # message after ack_wait, and the loop goes on.
            log.exception("could not settle a message", extra={"subject": msg.subject})

    async def _handle(self, msg: Msg) -> None:
        try:
            kind, job_id = self._subjects.parse(msg.subject)
        except SubjectError as exc:
            log.error("not an event subject, terminated: %s", exc)
            await self._reject(msg, "?", BAD_SUBJECT, str(exc))
            return
        handler = self._handlers.get(kind)
        if handler is None:
            # A newer release's event: never ack it away; it comes back after ack_wait.
            log.warning("unknown event kind left unacknowledged", extra={"kind": kind})
            self._count(kind, "unknown_kind")
            return
        context = {"kind": kind, "job_id": str(job_id)}
        try:
            event = decode_event(msg.data)
        except msgspec.DecodeError as exc:
            log.error("malformed event terminated: %s", exc, extra=context)
            await self._reject(msg, kind, UNDECODABLE, str(exc))
            return
        if event.kind != kind or event.job_id != job_id:
            log.error("event body does not match its subject, terminated", extra=context)
            detail = (
                f"body is a {event.kind} of job {event.job_id}, subject says {kind} of {job_id}"
            )
            await self._reject(msg, kind, SUBJECT_MISMATCH, detail)
            return
        started = time.perf_counter()
        working = _StillWorking(msg, self._spec.ack_wait_s / 3)
        try:
            if tracing.ENABLED:
                await self._traced(handler, event, msg, kind)
            else:
                await handler(event)
        except RetryLater as wait:
            delivered = msg.metadata.num_delivered
            quick = delivered <= wait.quick_attempts
            delay = wait.delay_s if quick else self._delay(delivered)
            log.log(
                logging.INFO if quick else logging.WARNING,
                "not yet (%s), redelivery in %.1fs",
                wait,
                delay,
                extra={**context, "delivered": delivered},
            )
            await msg.nak(delay=delay)
            self._count(kind, "deferred")
            return
        except Exception:
            delivered = msg.metadata.num_delivered
            delay = self._delay(delivered)
            log.exception(
                "handler failed, redelivery in %.1fs",
                delay,
                extra={**context, "delivered": delivered},
            )
            await msg.nak(delay=delay)
            self._count(kind, "retried")
            return
        finally:
            working.stop()
            timer = self._timers.get(kind)
            if timer is None:
                timer = self._timers[kind] = HANDLER_SECONDS.labels(self._spec.durable, kind)
            timer.observe(time.perf_counter() - started)
        await msg.ack()
        self._count(kind, "acked")

    async def _traced(self, handler: Handler, event: Any, msg: Msg, kind: str) -> None:
        """The handler inside a consumer span following from the publisher's `traceparent`
        (a redelivery is a span of its own in the same trace)."""
        attributes: tracing.Attributes = {
            "messaging.system": "nats",
            "messaging.consumer.group.name": self._spec.durable,
            "messaging.message.delivery_count": msg.metadata.num_delivered or 1,
            "job.id": str(event.job_id),
        }
        with tracing.span(
            f"process job.{kind}",
            kind="consumer",
            parent=tracing.extract(msg.headers),
            attributes=attributes,
        ):
            await handler(event)

    async def _reject(self, msg: Msg, kind: str, reason: str, detail: str) -> None:
        if self._on_reject is not None:
            try:
                await self._on_reject(msg, reason, detail)
            except Exception:
                # Never lose it: it comes back later; other messages go on meanwhile.
                log.exception("could not set a rejected message aside; it comes back later")
                await msg.nak(delay=30.0)
                return
        # Terminated, not deleted: the message stays in the stream for an operator to inspect.
        await msg.term()
        self._count(kind, "rejected")

    def _count(self, kind: str, outcome: str) -> None:
        counter = self._counters.get((kind, outcome))
        if counter is None:
            counter = MESSAGES.labels(self._spec.durable, kind, outcome)
            self._counters[(kind, outcome)] = counter
        counter.inc()
