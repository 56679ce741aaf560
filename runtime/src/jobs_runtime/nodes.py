"""Leaving a NATS node cut off from its cluster: its clients stay connected to it, yet nothing
they send reaches JetStream, so a service probes JetStream and moves to another node.

A node that lost its routes answers core NATS as before: nats-py sees a healthy connection and
never reconnects. Every publish to a stream, every KV write and every consumer ack then times
out or is refused (`JetStream system temporarily unavailable`) for as long as the cut lasts;
the gateway answered `503`, webhook-ingest refused `start` webhooks, and an ai-runner could
not record a prediction it had just created. The account-info request is answered only where
the cluster's meta leader is reachable, so it tells such a node apart in one round trip.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Final

from nats.aio.client import Client as NATS
from nats.aio.client import Server
from nats.errors import Error as NatsError

log = logging.getLogger(__name__)

# Failed probes in a row before leaving the node: a meta-leader election in a healthy cluster
# takes a probe or two, a cut lasts.
FAILURES_TO_LEAVE: Final = 3
# How long a node left is passed over when reconnecting, unless it is the only one left.
AVOID_S: Final = 60.0
# A reconnect to a server that just refused waits this long, as nats-py's own selection does.
RECONNECT_WAIT_S: Final = 0.5


class NodeWatch:
    """Probes JetStream every `probe_s` through the connection; after `FAILURES_TO_LEAVE`
    failures in a row it reconnects elsewhere, passing over the node it left for `AVOID_S`.

    `choose` is the connection's `reconnect_to_server_handler`: a random node of the pool that
    is not being avoided, as nats-py's own shuffle would pick.
    """

    def __init__(
        self,
        probe_s: float,
        *,
        failures: int = FAILURES_TO_LEAVE,
        avoid_s: float = AVOID_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe_s = probe_s
        self.failures = failures
        self.avoid_s = avoid_s
        self._clock = clock
        self._avoid: dict[str, float] = {}
        self.left = 0

    def avoid(self, netloc: str) -> None:
        self._avoid[netloc] = self._clock() + self.avoid_s

    def choose(self, servers: list[Server], _info: dict[str, Any]) -> tuple[Server | None, float]:
        now = self._clock()
        open_ = [s for s in servers if self._avoid.get(s.uri.netloc, 0.0) <= now]
        picked = random.choice(open_ or servers)
        return picked, RECONNECT_WAIT_S if picked.reconnects else 0.0

    def failed(self, streak: int) -> bool:
        """Whether `streak` failed probes in a row mean the node is cut off."""
        return streak >= self.failures

    async def run(self, nc: NATS, stop: asyncio.Event) -> None:
        """Probe until `stop`; leave the node when the probes keep failing."""
        js = nc.jetstream(timeout=self.probe_s)
        streak = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.probe_s)
                return
            except TimeoutError:
                pass
            if not nc.is_connected:
                streak = 0  # reconnecting already
                continue
            try:
                await js.account_info()
                streak = 0
                continue
            except (TimeoutError, NatsError) as exc:
                streak += 1
                reason = exc
            if not self.failed(streak):
                continue
            node = nc.connected_url.netloc if nc.connected_url else "?"
            log.warning(
                "JetStream unreachable through NATS node %s (%d probes in a row: %r); "
                "reconnecting to another node",
                node,
                streak,
                reason,
            )
            self.avoid(node)
            self.left += 1
            streak = 0
            await nc.force_reconnect()
