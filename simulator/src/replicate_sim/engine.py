"""The simulated account: predictions, their timers and webhooks, knobs, limits and the audit."""

from __future__ import annotations

import asyncio
import base64
import bisect
import dataclasses
import functools
import itertools
import json
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from replicate_sim.config import Knobs, Settings, merge_knobs
from replicate_sim.model import (
    Faults,
    FinalStatus,
    Prediction,
    WebhookEvent,
    ending,
    render,
    status_at,
    tokens_written,
)
from replicate_sim.outputs import STREAMING_MODELS, input_tokens, output_chunks, token_ends
from replicate_sim.webhooks import Later, Outgoing, WebhookSender, call_later, new_webhook_id

log = logging.getLogger(__name__)

FINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
ALL_EVENTS: frozenset[WebhookEvent] = frozenset({"start", "output", "logs", "completed"})
PAGE_SIZE = 100
# Replicate sends `output` and `logs` webhooks at most this often.
PROGRESS_INTERVAL_S = 0.5
RATE_WINDOW_S = 60.0


def new_prediction_id() -> str:
    return base64.b32encode(secrets.token_bytes(16)).decode().lower().rstrip("=")[:26]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def job_of(webhook: str | None) -> str | None:
    """The `job` query parameter of a webhook URL: how the audit finds a job's predictions."""
    if not webhook:
        return None
    values = parse_qs(urlsplit(webhook).query).get("job")
    return values[0] if values else None


@dataclass(slots=True)
class Page:
    results: list[Prediction]
    next_cursor: str | None
    previous_cursor: str | None


class CursorError(ValueError):
    """A list cursor this simulator did not issue."""


def _cursor(key: str, seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({key: seq}).encode()).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[str, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        ((key, seq),) = data.items()
    except Exception:
        raise CursorError("invalid cursor") from None
    if key not in ("before", "after") or not isinstance(seq, int):
        raise CursorError("invalid cursor")
    return key, seq


class Simulator:
    """Everything the HTTP layer asks of the simulated Replicate account."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        later: Later | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.knobs = Knobs()
        self._clock = clock
        self._later = later or call_later
        self._rng = rng or random.Random()
        self._predictions: dict[str, Prediction] = {}
        self._order: list[int] = []
        self._by_seq: dict[int, Prediction] = {}
        self._by_job: dict[str, list[str]] = {}
        self._seq = 0
        self._creations: deque[float] = deque()
        self._timers: dict[str, list[asyncio.TimerHandle]] = {}
        self._finished: dict[str, set[asyncio.Future[None]]] = {}
        self._reordered: dict[str, list[Outgoing]] = {}
        self._last_progress: dict[str, tuple[int, str]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.sender = WebhookSender(
            settings.sim_webhook_secret,
            concurrency=settings.sim_webhook_concurrency,
            timeout_s=settings.sim_webhook_timeout_s,
            retry_delays=settings.retry_delays,
            clock=clock,
            later=self._later,
        )

    async def start(self) -> None:
        await self.sender.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for handles in self._timers.values():
            for handle in handles:
                handle.cancel()
        await self.sender.stop()

    # Knobs -----------------------------------------------------------------------------

    def configure(self, patch: object) -> Knobs:
        knobs = merge_knobs(self.knobs, patch)
        if isinstance(patch, dict) and "createRateLimitPerMinute" in patch:
            # The limit counts creations from the moment it is set.
            self._creations.clear()
        self.knobs = knobs
        self.sender.hold(knobs.hold_webhooks)
        return knobs

    def reset(self) -> Knobs:
        """Defaults again; predictions, webhooks in flight and the audit are kept."""
        self.knobs = Knobs()
        self._creations.clear()
        self.sender.hold(False)
        return self.knobs

    def api_error(self) -> bool:
        return self._rng.random() < self.knobs.api_error_rate

    def throttled(self) -> int | None:
        """Seconds until a creation is allowed again, or None when one is allowed now."""
        limit = self.knobs.create_rate_limit_per_minute
        if limit is None:
            return None
        now = self._clock()
        while self._creations and self._creations[0] <= now - RATE_WINDOW_S:
            self._creations.popleft()
        if len(self._creations) < limit:
            return None
        oldest = self._creations[0] if self._creations else now
        return max(1, math.ceil(oldest + RATE_WINDOW_S - now))

    # Predictions -------------------------------------------------------------------------

    def create(
        self,
        *,
        model: str,
        version: str,
        model_input: dict[str, Any],
        webhook: str | None,
        events: list[WebhookEvent] | None,
        cancel_after_s: float | None,
        base_url: str,
    ) -> Prediction:
        now = self._clock()
        knobs = self.knobs
        if knobs.create_rate_limit_per_minute is not None:
            self._creations.append(now)
        draw = self._rng.random
        latency = knobs.latency_s
        self._seq += 1
        prediction = Prediction(
            id=new_prediction_id(),
            seq=self._seq,
            model=model,
            version=version,
            input=model_input,
            webhook=webhook,
            events=frozenset(events) if events is not None else ALL_EVENTS,
            job=job_of(webhook),
            created_at=now,
            start_at=now + latency * 0.1,
            end_at=now + latency,
            outcome="failed" if draw() < knobs.prediction_fail_rate else "succeeded",
            aborts=draw() < knobs.abort_rate,
            chunks=output_chunks(model_input),
            base_url=base_url,
            deadline_at=None if cancel_after_s is None else now + cancel_after_s,
            data_removed_after_s=knobs.data_removed_after_s,
            faults=Faults(
                drop_webhooks=draw() < knobs.drop_webhook_rate,
                duplicate_final=draw() < knobs.duplicate_webhook_rate,
                reorder=knobs.reorder_webhooks,
            ),
            streams=model in STREAMING_MODELS,
            tokens_per_s=knobs.tokens_per_s,
            input_tokens=input_tokens(model_input),
        )
        self._predictions[prediction.id] = prediction
        self._by_seq[prediction.seq] = prediction
        self._order.append(prediction.seq)
        if prediction.job is not None:
            self._by_job.setdefault(prediction.job, []).append(prediction.id)
        self._schedule(prediction)
        return prediction

    def get(self, prediction_id: str) -> Prediction | None:
        return self._predictions.get(prediction_id)

    def cancel(self, prediction_id: str) -> Prediction | None:
        """Cancel a running prediction; one already finished is returned as it is."""
        prediction = self._predictions.get(prediction_id)
        if prediction is None:
            return None
        now = self._clock()
        end, _ = ending(prediction)
        if now < end:
            prediction.canceled_at = now
            self._cancel_timers(prediction.id)
            self._finish(prediction)
        return prediction

    def _now_for(self, prediction: Prediction, at: float | None = None) -> float:
        now = max(self._clock(), at or 0.0)
        return max(now, ending(prediction)[0]) if prediction.finished else now

    def show(self, prediction: Prediction) -> dict[str, Any]:
        return render(prediction, self._now_for(prediction))

    def is_final(self, prediction: Prediction) -> bool:
        return status_at(prediction, self._now_for(prediction)) in FINAL

    async def wait_final(self, prediction: Prediction, timeout_s: float) -> None:
        """Until the prediction ends (a cancel may bring that forward), at most `timeout_s`:
        what `Prefer: wait` does, and how a stream reader sleeps until its next token. One
        future and one timer a waiter, no task."""
        if self.is_final(prediction):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._finished.setdefault(prediction.id, set())
        waiters.add(waiter)
        timer = self._later(timeout_s, functools.partial(_wake, waiter))
        try:
            await waiter
        finally:
            timer.cancel()
            waiters.discard(waiter)

    # Streams --------------------------------------------------------------------------------

    def written(self, prediction: Prediction) -> tuple[int, FinalStatus | None]:
        """Tokens of its text written so far, and the final status once it has one."""
        now = self._now_for(prediction)
        end, final = ending(prediction)
        return tokens_written(prediction, now), final if now >= end else None

    def clock(self) -> float:
        return self._clock()

    def stream_cut(self, tokens: int) -> int | None:
        """For a new stream connection: after how many tokens `streamDropRate` cuts it, if it
        does (at least one, so the reader always gets an event first)."""
        if self._rng.random() >= self.knobs.stream_drop_rate:
            return None
        return self._rng.randint(1, max(1, tokens))

    def page(self, cursor: str | None) -> Page:
        """Newest first, `PAGE_SIZE` a page; cursors name a position, so creations between
        two requests neither repeat nor skip anything on later pages."""
        order = self._order
        if cursor is None:
            newer_than, older_than = None, None
        else:
            key, seq = _parse_cursor(cursor)
            newer_than, older_than = (seq, None) if key == "after" else (None, seq)
        results: list[Prediction] = []
        if newer_than is not None:
            # The previous page: the PAGE_SIZE oldest of those newer than the cursor.
            i = bisect.bisect_right(order, newer_than)
            while i < len(order) and len(results) < PAGE_SIZE:
                if (p := self._by_seq.get(order[i])) is not None:
                    results.append(p)
                i += 1
            results.reverse()
        else:
            i = len(order) if older_than is None else bisect.bisect_left(order, older_than)
            while i > 0 and len(results) < PAGE_SIZE:
                i -= 1
                if (p := self._by_seq.get(order[i])) is not None:
                    results.append(p)
        if not results:
            return Page([], None, None)
        newest, oldest = results[0].seq, results[-1].seq
        return Page(
            results,
            _cursor("before", oldest) if self._present_before(oldest) else None,
            _cursor("after", newest) if self._present_after(newest) else None,
        )

    def _present_before(self, seq: int) -> bool:
        i = bisect.bisect_left(self._order, seq)
        return any(self._order[j] in self._by_seq for j in range(i - 1, -1, -1))

    def _present_after(self, seq: int) -> bool:
        i = bisect.bisect_right(self._order, seq)
        return any(self._order[j] in self._by_seq for j in range(i, len(self._order)))

    def audit(self, job: str) -> list[dict[str, Any]]:
        """Every prediction created for a job, as Replicate shows it, with each webhook sent."""
        results = []
        for prediction_id in self._by_job.get(job, []):
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                continue
            body = self.show(prediction)
            body["deliveries"] = [
                {
                    "event": d.event,
                    "webhook_id": d.webhook_id,
                    "attempt": d.attempt,
                    "status": d.status,
                    "error": d.error,
                    "at": d.at,
                }
                for d in prediction.deliveries
            ]
            body["sim_faults"] = dataclasses.asdict(prediction.faults)
            if prediction.streams:
                # The text's own clock (`time.time()`), so a benchmark can tell when each
                # character was written and time its way to a client.
                body["sim_stream"] = {
                    "start_at": prediction.start_at,
                    "tokens_per_s": prediction.tokens_per_s,
                    "token_ends": token_ends(prediction.chunks),
                }
            results.append(body)
        return results

    @property
    def size(self) -> int:
        return len(self._predictions)

    @property
    def running(self) -> int:
        """Predictions whose timers (start, progress, end) have not all run yet."""
        return len(self._timers)

    # Timers and webhooks ------------------------------------------------------------------

    def _schedule(self, prediction: Prediction) -> None:
        later = self._later
        now = self._clock()
        end, _ = ending(prediction)
        handles = [later(max(0.0, end - now), functools.partial(self._finish, prediction))]
        if prediction.webhook is not None and not prediction.faults.drop_webhooks:
            if "start" in prediction.events and not prediction.aborts and prediction.start_at < end:
                handles.append(
                    later(
                        max(0.0, prediction.start_at - now),
                        functools.partial(self._start, prediction),
                    )
                )
            if prediction.events & {"output", "logs"} and not prediction.aborts:
                first = max(0.0, prediction.start_at - now) + PROGRESS_INTERVAL_S
                if now + first < end:
                    handles.append(later(first, functools.partial(self._progress, prediction)))
        self._timers[prediction.id] = handles

    def _cancel_timers(self, prediction_id: str) -> None:
        for handle in self._timers.pop(prediction_id, []):
            handle.cancel()

    def _start(self, prediction: Prediction) -> None:
        self._emit(prediction, "start", at=prediction.start_at)

    def _progress(self, prediction: Prediction) -> None:
        now = self._clock()
        body = render(prediction, now)
        seen_text, seen_logs = self._last_progress.get(prediction.id, (0, ""))
        text = sum(len(chunk) for chunk in body["output"] or [])
        if "output" in prediction.events and text != seen_text:
            self._emit(prediction, "output", body)
        elif "logs" in prediction.events and body["logs"] != seen_logs:
            self._emit(prediction, "logs", body)
        self._last_progress[prediction.id] = (text, body["logs"])
        end, _ = ending(prediction)
        if now + PROGRESS_INTERVAL_S < end:
            handle = self._later(PROGRESS_INTERVAL_S, functools.partial(self._progress, prediction))
            self._timers.setdefault(prediction.id, []).append(handle)

    def _finish(self, prediction: Prediction) -> None:
        prediction.finished = True
        self._cancel_timers(prediction.id)
        self._last_progress.pop(prediction.id, None)
        self._emit(prediction, "completed")
        if prediction.data_removed_after_s < self.settings.sim_data_retention_s:
            # Sooner than the sweep would: on a timer of its own, forgotten with the prediction.
            handle = asyncio.get_running_loop().call_later(
                prediction.data_removed_after_s, self._remove_data, prediction
            )
            self._timers[prediction.id] = [handle]
        for waiter in self._finished.pop(prediction.id, ()):
            _wake(waiter)

    def _emit(
        self,
        prediction: Prediction,
        event: WebhookEvent,
        body: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        if prediction.webhook is None or event not in prediction.events:
            return
        if prediction.faults.drop_webhooks:
            return
        if body is None:
            body = render(prediction, self._now_for(prediction, at))
        item = Outgoing(
            prediction=prediction,
            url=prediction.webhook,
            event=event,
            webhook_id=new_webhook_id(),
            body=msgspec.json.encode(body),
        )
        items = [item, item.again()] if item.final and prediction.faults.duplicate_final else [item]
        if prediction.faults.reorder:
            buffered = self._reordered.setdefault(prediction.id, [])
            buffered.extend(items)
            if not item.final:
                return
            items = list(reversed(self._reordered.pop(prediction.id)))
            # One after the other, or parallel workers could put them back in order.
            for earlier, later in itertools.pairwise(items):
                earlier.then = later
            items = items[:1]
        for outgoing in items:
            self.sender.submit(outgoing)

    # Retention ----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        interval = min(5.0, self.settings.sim_data_retention_s / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")

    def sweep(self) -> None:
        """Remove data an hour after a prediction ended and forget it an hour later still."""
        now = self._clock()
        retention = self.settings.sim_data_retention_s
        for seq in self._order:
            prediction = self._by_seq.get(seq)
            if prediction is None:
                continue
            if prediction.created_at > now - retention:
                break  # created in creation order: none after this one can be due
            end, _ = ending(prediction)
            if now < end:
                continue
            if end <= now - 2 * retention:
                self._forget(prediction)
            elif end <= now - retention and not prediction.data_removed:
                self._remove_data(prediction)
        if len(self._order) > 2 * len(self._by_seq) + 1024:
            self._order = [s for s in self._order if s in self._by_seq]

    def _remove_data(self, prediction: Prediction) -> None:
        prediction.data_removed = True
        prediction.chunks = []
        prediction.input = {}

    def _forget(self, prediction: Prediction) -> None:
        self._predictions.pop(prediction.id, None)
        self._by_seq.pop(prediction.seq, None)
        self._cancel_timers(prediction.id)
        if prediction.job is not None:
            ids = self._by_job.get(prediction.job, [])
            if prediction.id in ids:
                ids.remove(prediction.id)
            if not ids:
                self._by_job.pop(prediction.job, None)
