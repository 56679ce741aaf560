"""Waiting for a condition in tests without fixed sleeps."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float = 10.0, what: str = ""
) -> None:
    """Return as soon as `check()` holds; fail the test if it does not within `within` seconds.

    `what` names the condition in the failure message.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"condition not reached within {within}s" + (
            f": {what}" if what else ""
        )
        await asyncio.sleep(0.05)
