"""Start-up declarations (streams, buckets, Object Stores) retried while JetStream cannot take
them yet: a cluster whose nodes are still starting has no quorum, or too few peers for an R3
stream, and a service started with it must wait (not ready) rather than crash-loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import nats.errors
from nats.js.errors import APIError, ServiceUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

# JetStream's answers while a cluster forms: no suitable peers for placement, insufficient
# resources (fewer peers than replicas, or a node's store not yet known), JetStream not enabled
# on the account or server yet, no meta leader, the request timed out.
_NOT_YET: Final = frozenset({10005, 10008, 10023, 10039, 10076})
FIRST_DELAY_S: Final = 0.5
MAX_DELAY_S: Final = 5.0
# One warning per this many seconds at most, however often an attempt fails.
LOG_EVERY_S: Final = 5.0


class SetupTimedOut(Exception):
    """JetStream did not take a declaration within the bound; the message names it and why."""


def not_ready_yet(exc: BaseException) -> bool:
    """Whether `exc` says JetStream cannot take a declaration *yet* (worth waiting for)."""
    if isinstance(exc, ServiceUnavailableError | nats.errors.NoRespondersError):
        return True
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError | nats.errors.ConnectionClosedError):
        return True
    if isinstance(exc, APIError):
        # Not "insufficient storage" (10047): limits beyond what a node may reserve stay so.
        return exc.err_code in _NOT_YET
    return False


async def until_set_up(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    within_s: float,
    stop: asyncio.Event | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    first_delay_s: float = FIRST_DELAY_S,
    max_delay_s: float = MAX_DELAY_S,
) -> T:
    """`attempt()` until it succeeds, retrying with backoff while JetStream is not ready yet.

    Any other error is raised at once (a bad configuration does not heal by waiting). After
    `within_s`, or once `stop` is set, the last error is raised as `SetupTimedOut`."""
    started = monotonic()
    delay = first_delay_s
    last_log = -LOG_EVERY_S
    attempts = 0
    while True:
        attempts += 1
        try:
            return await attempt()
        except Exception as exc:
            if not not_ready_yet(exc):
                raise
            waited = monotonic() - started
            if waited >= within_s or (stop is not None and stop.is_set()):
                raise SetupTimedOut(
                    f"{what}: JetStream did not take it within {waited:.0f} s"
                    f" ({attempts} attempts): {exc!r}"
                ) from exc
            if monotonic() - last_log >= LOG_EVERY_S:
                last_log = monotonic()
                log.warning(
                    "%s: JetStream not ready, retrying: %r",
                    what,
                    exc,
                    extra={"attempt": attempts, "waited_s": round(waited, 1)},
                )
        delay_s = min(delay, max(0.0, within_s - (monotonic() - started)))
        if stop is None:
            await asyncio.sleep(delay_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
        delay = min(delay * 2, max_delay_s)
