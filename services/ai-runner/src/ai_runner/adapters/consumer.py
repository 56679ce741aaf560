"""A consumer loop that fetches only as many `requested` jobs as the shared limits let start
now, so jobs that must wait stay in the stream instead of being delivered and handed back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.errors import ConnectionClosedError, DrainTimeoutError
from nats.errors import TimeoutError as NatsTimeoutError

from ai_runner.adapters.limits import Capacity
from jobs_runtime.bus import ensure_consumer
from jobs_runtime.consumer import ConsumerLoop

log = logging.getLogger(__name__)


class PacedConsumerLoop(ConsumerLoop):
    """`ConsumerLoop` whose batch is the capacity `capacity()` reports at each fetch.

    The runtime's loop takes a fixed batch; this replaces only its fetch loop and reuses its
    per-message handling. `on_wait(limit)` is told each time a full limit holds fetching back.
    """

    def __init__(
        self,
        *args: Any,
        capacity: Callable[[], Awaitable[Capacity]],
        on_wait: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._capacity = capacity
        self._on_wait = on_wait

    async def run(self, stop: asyncio.Event) -> None:
        await ensure_consumer(self._js, self._stream, self._spec)
        subscription = await self._js.pull_subscribe_bind(
            durable=self._spec.durable, stream=self._stream
        )
        self.ready.set()
        if self._on_ready is not None:
            self._on_ready()
        pause = 0.1
        try:
            while not stop.is_set():
                try:
                    capacity = await self._capacity()
                    if capacity.wait is not None:
                        self._on_wait(capacity.wait.limit)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), min(capacity.wait.wait_s, 1.0))
                        continue
                    batch = min(self._batch, capacity.free)
                    messages = await subscription.fetch(batch, timeout=self._fetch_timeout_s)
                except NatsTimeoutError:
                    continue
                except (ConnectionClosedError, DrainTimeoutError):
                    return
                except Exception as exc:
                    # NATS restarting or JetStream not ready yet: wait and ask again.
                    log.warning("fetch failed, retrying: %r", exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                pause = 0.1
                await asyncio.gather(*(self._handle_safely(m) for m in messages))
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
