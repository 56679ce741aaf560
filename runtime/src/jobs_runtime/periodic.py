"""The one periodic loop of every service (sweeps, purges, samples): run a round every period
until the service stops, a failed round logged and the next one run on time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from jobs_runtime.errors import Unavailable

log = logging.getLogger(__name__)


async def every(
    period_s: float,
    stop: asyncio.Event,
    name: str,
    work: Callable[[], Awaitable[bool | None]],
    *,
    first_at_once: bool = False,
) -> None:
    """Run `work` every `period_s` until `stop`. A round answering True has more to do and
    the next starts at once. `Unavailable` is logged as a warning without a traceback (a
    dependency down is expected now and then); any other failure with one."""
    if not first_at_once and await _stopped_within(stop, period_s):
        return
    while not stop.is_set():
        more = False
        try:
            more = bool(await work())
        except Unavailable as exc:
            log.warning("%s skipped this round: %s", name, exc)
        except Exception:
            log.exception("%s failed this round", name)
        if not more and await _stopped_within(stop, period_s):
            return


async def _stopped_within(stop: asyncio.Event, period_s: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), period_s)
    return stop.is_set()
