"""Webhook delivery as Replicate does it: Standard Webhooks signatures, no redirects followed,
the final event retried with backoff for about a minute, a bounded number of connections.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx

from replicate_sim.model import Delivery, Prediction, WebhookEvent

log = logging.getLogger(__name__)

# A prediction that streams for an hour would otherwise keep thousands of audit entries.
MAX_DELIVERIES_KEPT = 500


def new_webhook_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: HMAC-SHA256 over `id.timestamp.body`, key after `whsec_`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass(slots=True)
class Outgoing:
    """One webhook to deliver; the body is the prediction as it was when the event happened."""

    prediction: Prediction
    url: str
    event: WebhookEvent
    webhook_id: str
    body: bytes
    attempt: int = 0
    # Sent once this one has had its first answer: keeps a batch in order on the wire.
    then: Outgoing | None = None

    @property
    def final(self) -> bool:
        return self.event == "completed"

    def again(self) -> Outgoing:
        """The same event once more, with the same `webhook-id` (a duplicate delivery)."""
        return replace(self, attempt=0)


Later = Callable[[float, Callable[[], None]], asyncio.TimerHandle]
"""Run a callback after so many seconds: the running loop's `call_later`, or a test's own
scheduler that moves time forward when the test says so."""


def call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)


class WebhookSender:
    """A queue drained by a fixed number of workers, one connection each at most."""

    def __init__(
        self,
        secret: str,
        *,
        concurrency: int,
        timeout_s: float,
        retry_delays: tuple[float, ...],
        clock: Callable[[], float] = time.time,
        later: Later | None = None,
    ) -> None:
        self.secret = secret
        self._later = later or call_later
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._retry_delays = retry_delays
        self._clock = clock
        self._queue: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._held: list[Outgoing] = []
        self._holding = False
        self._workers: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.TimerHandle] = set()
        self._client: httpx.AsyncClient | None = None
        self.in_flight = 0

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self._timeout_s,
            limits=httpx.Limits(
                max_connections=self._concurrency, max_keepalive_connections=self._concurrency
            ),
        )
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    async def stop(self) -> None:
        for handle in self._retries:
            handle.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._held)

    @property
    def pending_retries(self) -> int:
        """Failed final webhooks waiting for their retry to come due."""
        return len(self._retries)

    def hold(self, holding: bool) -> None:
        """While holding, webhooks wait; releasing sends them in the order they were made."""
        self._holding = holding
        if not holding:
            held, self._held = self._held, []
            for item in held:
                self._queue.put_nowait(item)

    def submit(self, item: Outgoing) -> None:
        if self._holding:
            self._held.append(item)
        else:
            self._queue.put_nowait(item)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            self.in_flight += 1
            follower, item.then = item.then, None
            try:
                await self._deliver(item)
            except Exception:
                log.exception("webhook delivery crashed", extra={"prediction": item.prediction.id})
            finally:
                if follower is not None:
                    self.submit(follower)
                self.in_flight -= 1

    async def _deliver(self, item: Outgoing) -> None:
        assert self._client is not None
        item.attempt += 1
        timestamp = int(self._clock())
        delivery = Delivery(
            event=item.event, webhook_id=item.webhook_id, attempt=item.attempt, at=self._clock()
        )
        deliveries = item.prediction.deliveries
        if len(deliveries) < MAX_DELIVERIES_KEPT:
            deliveries.append(delivery)
        headers = {
            "content-type": "application/json",
            "user-agent": "Replicate-Webhooks/sim",
            "webhook-id": item.webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, item.webhook_id, timestamp, item.body),
        }
        try:
            response = await self._client.post(item.url, content=item.body, headers=headers)
            delivery.status = response.status_code
            ok = 200 <= response.status_code < 300
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
            ok = False
        # Only the final webhook is retried, as Replicate does; a 3xx counts as a failure
        # because redirects are never followed.
        if not ok and item.final and item.attempt <= len(self._retry_delays):
            delay = self._retry_delays[item.attempt - 1]
            handle: asyncio.TimerHandle

            def retry() -> None:
                self._retries.discard(handle)
                self.submit(item)

            handle = self._later(delay, retry)
            self._retries.add(handle)
