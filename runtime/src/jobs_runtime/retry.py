"""`RetryLater`: how a handler says "not yet" (an expected wait), as opposed to failing.

Free of NATS imports, so handlers can raise it and stay pure.
"""

from __future__ import annotations


class RetryLater(Exception):
    """Hand the message back to come again in `delay_s`, for its first `quick_attempts`
    deliveries; after that the consumer's usual backoff applies, since a wait that long is a
    failure in disguise. Logged without a traceback."""

    def __init__(self, reason: str, *, delay_s: float = 1.0, quick_attempts: int = 5) -> None:
        super().__init__(reason)
        self.delay_s = delay_s
        self.quick_attempts = quick_attempts
