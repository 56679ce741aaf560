"""The relay's consumer: the durable `ai-runner-relay` over `job.submitted.>`, one reader task per
submitted prediction (its stream read, or without a stream URL the prediction itself), its
message held unacknowledged (and marked in progress) meanwhile, so the streams of a replica that
dies are redelivered.

A stream is read only once some client reads its job's text (a gateway's `OutputWanted` on
core NATS, see `ai_runner.demand`), unless `on_demand` is off; until then its message is held
unread, costing nothing but its place. A message is acknowledged once its stream is done or
given up, or once its job ends (completed or failed going by on core NATS); on SIGTERM each is
handed back at once, for another replica (or the restarted process) to read on from the log's
end. One timer for all streams marks their messages in progress, another sends their progress
(`event: progress` of `/events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, DrainTimeoutError
from nats.js import JetStreamContext

from ai_runner.demand import RecentlyWanted, start_now
from ai_runner.handlers.progress import PROGRESS_EVERY_S
from ai_runner.handlers.relaying import Relay
from ai_runner.ports import RelayObserver
from jobs_proto.events import JobSubmitted, decode_event
from jobs_proto.output import OUTPUT_WANTED_EVERY_S, decode_wanted
from jobs_proto.stream import ConsumerSpec
from jobs_proto.subjects import SubjectError, Subjects
from jobs_runtime.bus import ensure_consumer, server_has_all

log = logging.getLogger(__name__)

JOB_ENDED: Final = "job_ended"
STOPPED: Final = "stopped"
FETCH_BATCH: Final = 64


class RelayConsumer:
    """Runs one reader task per held message, at most `spec.max_ack_pending` at once."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        *,
        stream: str,
        spec: ConsumerSpec,
        subjects: Subjects,
        relay: Relay,
        observer: RelayObserver,
        fetch_timeout_s: float = 5.0,
        on_demand: bool = True,
        wanted_every_s: float = OUTPUT_WANTED_EVERY_S,
    ) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._spec = spec
        self._subjects = subjects
        self._relay = relay
        self._observer = observer
        self._fetch_timeout_s = fetch_timeout_s
        # The held messages and their readers; a job has one prediction streaming at a time,
        # rarely two (an orphan), so a job maps to a set.
        self._held: dict[asyncio.Task[None], uuid.UUID] = {}
        self._messages: dict[asyncio.Task[None], Msg] = {}
        self._by_job: dict[uuid.UUID, set[asyncio.Task[None]]] = {}
        self._ending: dict[asyncio.Task[None], str] = {}
        # Submitted predictions nobody reads yet, held unread by job.
        self._on_demand = on_demand
        self._wanted = RecentlyWanted(wanted_every_s)
        self._waiting: dict[uuid.UUID, list[tuple[Msg, JobSubmitted]]] = {}
        self.ready = asyncio.Event()

    @property
    def waiting(self) -> int:
        """Held messages whose stream nobody reads yet."""
        return sum(len(held) for held in self._waiting.values())

    async def run(self, stop: asyncio.Event) -> None:
        """Read streams until `stop` is set, then hand every held message back."""
        await ensure_consumer(self._js, self._stream, self._spec)
        pull = await self._js.pull_subscribe_bind(durable=self._spec.durable, stream=self._stream)
        ends = [
            await self._nc.subscribe(self._subjects.kind(kind), cb=self._job_ended)
            for kind in ("completed", "failed")
        ]
        if self._on_demand:
            ends.append(
                await self._nc.subscribe(self._subjects.all_output_wanted, cb=self._on_wanted)
            )
        # Ready means the server has the subscriptions: a gateway's word sent after it is heard.
        await server_has_all(self._nc)
        tickers = [
            asyncio.ensure_future(self._mark_in_progress(stop)),
            asyncio.ensure_future(self._send_progress(stop)),
        ]
        self.ready.set()
        try:
            await self._fetch_until(stop, pull)
        finally:
            for ticker in tickers:
                ticker.cancel()
            for task in list(self._held):
                self._ending.setdefault(task, STOPPED)
                task.cancel()
            for held in self._waiting.values():
                for msg, _ in held:
                    await _settle(msg.nak())
            self._waiting.clear()
            if self._held:
                await asyncio.gather(*self._held, return_exceptions=True)
            for end in ends:
                with contextlib.suppress(Exception):
                    await end.unsubscribe()
            with contextlib.suppress(Exception):
                await pull.unsubscribe()

    async def _fetch_until(
        self, stop: asyncio.Event, pull: JetStreamContext.PullSubscription
    ) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        fetch: asyncio.Future[list[Msg]] | None = None
        pause = 0.1
        try:
            while not stop.is_set():
                room = self._spec.max_ack_pending - len(self._held) - self.waiting
                if room <= 0:
                    # Readers end, or waiting messages are settled when their jobs end.
                    await asyncio.wait(
                        {*self._held, stopping},
                        timeout=1.0,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                fetch = asyncio.ensure_future(
                    pull.fetch(min(room, FETCH_BATCH), timeout=self._fetch_timeout_s)
                )
                await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    return
                try:
                    messages = fetch.result()
                except TimeoutError:
                    continue
                except (ConnectionClosedError, DrainTimeoutError):
                    return
                except Exception as exc:
                    log.warning("relay fetch failed, retrying: %r", exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
                    continue
                pause = 0.1
                for msg in messages:
                    await self._take(msg)
        finally:
            stopping.cancel()
            if fetch is not None:
                # Its outcome is read, so asyncio never reports it as unretrieved.
                fetch.cancel()
                fetch.add_done_callback(_retrieve)

    async def _take(self, msg: Msg) -> None:
        try:
            _, job_id = self._subjects.parse(msg.subject)
            event = decode_event(msg.data)
        except (SubjectError, msgspec.DecodeError) as exc:
            # The job-store parks what it cannot read; the relay has nothing to do with it.
            log.error("not a submitted event, skipped: %s", exc)
            await _settle(msg.term())
            return
        if not isinstance(event, JobSubmitted) or event.job_id != job_id:
            await _settle(msg.ack())
            return
        if not event.stream_url and self._relay.reader is None:
            # Nothing to read: the text comes from `output` webhooks (webhook-ingest) or with
            # the job's result.
            await _settle(msg.ack())
            return
        if not await self._read_now(event):
            self._waiting.setdefault(job_id, []).append((msg, event))
            return
        self._start(msg, event)

    async def _read_now(self, event: JobSubmitted) -> bool:
        wanted = self._wanted.wanted(event.job_id, time.monotonic())
        logged = 0
        # The log is asked only when its answer can decide.
        if self._on_demand and not wanted:
            try:
                logged = (await self._relay.log.end(event.job_id, event.prediction_id)).end
            except Exception as exc:
                # Unknown: reading costs some CPU, not reading may cost a reader its text.
                log.warning("output log unreadable, the stream is read at once: %r", exc)
                return True
        return start_now(on_demand=self._on_demand, wanted=wanted, logged_chars=logged)

    async def _on_wanted(self, msg: Msg) -> None:
        """A gateway has a client reading a job's text: read its waiting streams."""
        try:
            wanted = decode_wanted(msg.data)
        except msgspec.DecodeError as exc:
            log.warning("not an OutputWanted, ignored: %s", exc)
            return
        self._wanted.note(wanted.job_id, time.monotonic())
        for held, event in self._waiting.pop(wanted.job_id, ()):
            self._start(held, event)

    def _start(self, msg: Msg, event: JobSubmitted) -> None:
        job_id = event.job_id
        task = asyncio.ensure_future(self._follow(msg, event))
        self._held[task] = job_id
        self._messages[task] = msg
        self._by_job.setdefault(job_id, set()).add(task)
        task.add_done_callback(self._forget)

    async def _follow(self, msg: Msg, event: JobSubmitted) -> None:
        """Read one stream, then settle its message: acknowledged once read (or its job
        ended), handed back when the service stops, left to ack_wait after a bug."""
        task = asyncio.current_task()
        context = {"job_id": str(event.job_id), "prediction_id": event.prediction_id}
        self._observer.stream_opened()
        outcome = STOPPED
        try:
            outcome = await self._relay.follow(event)
        except asyncio.CancelledError:
            outcome = self._ending.get(task, STOPPED)  # type: ignore[arg-type]
            if outcome == STOPPED:
                await _settle(msg.nak())
                raise
        except Exception:
            outcome = "failed"
            log.exception("relay failed; the stream comes back after ack_wait", extra=context)
            return
        finally:
            self._observer.stream_closed(outcome)
        log.info("stream relayed", extra={**context, "outcome": outcome})
        await _settle(msg.ack())

    def _forget(self, task: asyncio.Task[None]) -> None:
        job_id = self._held.pop(task)
        self._messages.pop(task, None)
        self._ending.pop(task, None)
        tasks = self._by_job.get(job_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._by_job[job_id]

    async def _job_ended(self, msg: Msg) -> None:
        try:
            _, job_id = self._subjects.parse(msg.subject)
        except SubjectError:
            return
        for task in self._by_job.get(job_id, ()):
            self._ending[task] = JOB_ENDED
            task.cancel()
        # Nobody read these: the text comes with the job's result.
        for held, _ in self._waiting.pop(job_id, ()):
            await _settle(held.ack())

    async def _mark_in_progress(self, stop: asyncio.Event) -> None:
        """Tell JetStream every held message is still being worked on, well within ack_wait:
        one timer for all streams, none per stream."""
        every_s = self._spec.ack_wait_s / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
                return
            for msg in list(self._messages.values()):
                await _settle(msg.in_progress())
            await self._sweep_waiting()

    async def _sweep_waiting(self) -> None:
        """Marks the waiting messages in progress, and lets go of those whose job must be over
        by now (its end on core NATS was missed): nobody will read them."""
        now = self._relay.now()
        for job_id, held in list(self._waiting.items()):
            for msg, event in list(held):
                if self._relay.policy.is_over((now - event.occurred_at).total_seconds()):
                    held.remove((msg, event))
                    await _settle(msg.ack())
                else:
                    await _settle(msg.in_progress())
            if not held:
                self._waiting.pop(job_id, None)

    async def _send_progress(self, stop: asyncio.Event) -> None:
        """Each stream's progress, if it got text, every `PROGRESS_EVERY_S`: one timer for all
        streams, as Replicate's `output` webhooks came at most every 500 ms per prediction."""
        board = self._relay.progress
        if board is None:
            return
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PROGRESS_EVERY_S)
                return
            try:
                await board.tick()
            except Exception:
                log.exception("progress tick failed; the next one sends the text again")


def _retrieve(future: asyncio.Future[list[Msg]]) -> None:
    if not future.cancelled():
        future.exception()


async def _settle(operation: Awaitable[None]) -> None:
    """An ack, nak or progress mark; one NATS cannot take now is settled by ack_wait instead."""
    try:
        await operation
    except Exception as exc:
        log.warning("could not settle a relay message: %r", exc)
