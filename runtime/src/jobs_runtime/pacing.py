"""How a consumer loop is paced, free of NATS so a service's pure pacing rules can answer it:
asked before each fetch, a service with limits of its own (the ai-runner's creations) takes only
what it can start now, and what must wait stays in the stream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Allowance:
    """How many messages the loop may take now; with none, how long to wait before asking again."""

    count: int
    wait_s: float = 0.0


Pace = Callable[[], Awaitable[Allowance]]
