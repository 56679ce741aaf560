"""Publishes `OutputWanted` on core NATS for the hub's watched jobs (`wanted.py`): a job that
becomes watched at once, and every watched job once per period, from one task per process
however many streams read it. Fire and forget: a message not sent is counted and logged, and
the next round sends it again; no stream ever waits for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from gateway.ports import GatewayObserver
from gateway.wanted import WantedOutput
from jobs_proto.output import OutputWanted, encode_wanted
from jobs_proto.subjects import Subjects

log = logging.getLogger(__name__)


class NatsOutputWanted:
    """The process's one publisher of `OutputWanted`; `run` until cancelled or `stop`."""

    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        wanted: WantedOutput,
        every_s: float,
        observer: GatewayObserver,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._wanted = wanted
        self._every_s = every_s
        self._observer = observer
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._wanted.on_fresh = self._wake.set
        due = loop.time() + self._every_s
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await self._wake.wait()
                self._wake.clear()
                if loop.time() >= due:
                    # From now, not from `due`: a slow round never makes the next ones burst.
                    due = loop.time() + self._every_s
                    batch = self._wanted.round()
                else:
                    batch = self._wanted.fresh()
                await self.publish(batch)
        finally:
            self._wanted.on_fresh = None

    async def publish(self, batch: list[OutputWanted]) -> None:
        if not batch:
            return
        if not self._nc.is_connected:
            # While reconnecting nats-py would buffer them to go out late: the next round's
            # are the ones that count.
            self._failed(len(batch), "not connected to NATS")
            return
        sent = 0
        try:
            for wanted in batch:
                await self._nc.publish(
                    self._subjects.output_wanted(wanted.job_id), encode_wanted(wanted)
                )
                sent += 1
        except (NatsError, OSError) as exc:
            self._failed(len(batch) - sent, repr(exc))
        self._observer.output_wanted(sent, 0)

    def _failed(self, count: int, error: str) -> None:
        self._observer.output_wanted(0, count)
        log.warning("output wanted not published", extra={"messages": count, "error": error})
