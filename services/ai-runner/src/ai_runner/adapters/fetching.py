"""Long fetches that end at shutdown: the consumer loops wait up to `FETCH_WAIT_S` on the server
for messages (asking again every second costs an idle runner ~3 ms of CPU per second across its
three consumers), yet SIGTERM must not wait for a fetch with nothing in it to run out.

`jobs_runtime.consumer.ConsumerLoop` looks at `stop` only between fetches, so the runner hands
it a JetStream context whose pull subscriptions give a fetch up once `stop` is set; the loop
sees a timeout, then `stop`, and returns."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final, cast

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

# A message is handed over the moment it arrives, so this is no latency: it is how often an
# idle consumer asks again (a pull request, its timeout status, and for `requested` a read of
# the limits' capacity).
FETCH_WAIT_S: Final = 5.0


class _StoppableSubscription:
    def __init__(self, subscription: JetStreamContext.PullSubscription, stop: asyncio.Event):
        self._subscription = subscription
        self._stop = stop
        self._stopping: asyncio.Task[bool] | None = None

    # The signature of `PullSubscription.fetch`, which the consumer loop calls.
    async def fetch(self, batch: int = 1, timeout: float | None = 5) -> list[Msg]:  # noqa: ASYNC109
        if self._stopping is None:
            # One waiter for the subscription's life rather than one per fetch.
            self._stopping = asyncio.ensure_future(self._stop.wait())
        if self._stopping.done():
            raise NatsTimeoutError
        fetching = asyncio.ensure_future(self._subscription.fetch(batch, timeout=timeout))
        await asyncio.wait((fetching, self._stopping), return_when=asyncio.FIRST_COMPLETED)
        if fetching.done():
            return fetching.result()
        # A message that arrived in this very moment is not lost: unacknowledged, JetStream
        # hands it out again after the consumer's ack_wait, as for a runner that died.
        fetching.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await fetching
        raise NatsTimeoutError

    async def unsubscribe(self) -> None:
        if self._stopping is not None:
            self._stopping.cancel()
        await self._subscription.unsubscribe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._subscription, name)


class _StoppableJetStream:
    def __init__(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        self._js = js
        self._stop = stop

    async def pull_subscribe_bind(self, *args: Any, **kwargs: Any) -> _StoppableSubscription:
        subscription = await self._js.pull_subscribe_bind(*args, **kwargs)
        return _StoppableSubscription(subscription, self._stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


def stoppable(js: JetStreamContext, stop: asyncio.Event) -> JetStreamContext:
    """`js` for a consumer loop: its fetches end, as if timed out, once `stop` is set."""
    return cast(JetStreamContext, _StoppableJetStream(js, stop))
