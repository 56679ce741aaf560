"""NATS behind the job-store's ports: change announcements, and the `GetJob` endpoint.

The endpoint is a NATS micro service (discoverable with `$SRV.PING`/`INFO`/`STATS`), in the
queue group every replica shares, so each request is answered by exactly one replica.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import metadata
from typing import Final

import msgspec
from nats import micro
from nats.aio.client import Client as NATS
from nats.micro.request import Request
from nats.micro.service import Service as MicroService

from job_store.handlers import get_job
from job_store.ports import JobStore
from jobs_proto.api import GetJob, JobChanged
from jobs_proto.subjects import Subjects

log = logging.getLogger(__name__)

SERVICE_NAME: Final = "job-store"
_encoder: Final = msgspec.json.Encoder()
_get_job_decoder: Final = msgspec.json.Decoder(GetJob)


class NatsChangeAnnouncer:
    """The `ChangeAnnouncer` port: the job's new state on core NATS at `job_change.<jobId>`."""

    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects

    async def announce(self, change: JobChanged) -> None:
        await self._nc.publish(
            self._subjects.job_change(change.job.job_id), _encoder.encode(change)
        )


def _header_safe(text: str, limit: int = 200) -> str:
    # The description travels in a header: one line, bounded.
    return " ".join(text.split())[:limit]


class GetJobEndpoint:
    """Serves `GetJob` -> `JobReply`; a request that is not a `GetJob` gets a `400` error reply.

    nats-py runs a subscription's callbacks one after another, so each request is answered in
    a task of its own (at most `concurrency` at once) and one slow read never queues the rest.
    """

    def __init__(
        self, nc: NATS, subjects: Subjects, store: JobStore, *, concurrency: int = 64
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._store = store
        self._slots = asyncio.Semaphore(concurrency)
        self._in_hand: set[asyncio.Task[None]] = set()
        self._service: MicroService | None = None

    async def start(self) -> None:
        self._service = await micro.add_service(
            self._nc,
            name=SERVICE_NAME,
            version=metadata.version("job-store"),
            description="Jobs by id, for their owners",
        )
        await self._service.add_endpoint(
            name="get", subject=self._subjects.get_job, handler=self._accept
        )
        # Round trip to the server: once this returns, requests reach us (readiness relies on it).
        await self._nc.flush()

    async def stop(self) -> None:
        """Stop taking requests (other replicas get them), then finish those in hand."""
        if self._service is not None:
            try:
                await self._service.stop()
            except Exception as exc:
                # The connection is already closed or draining: no request can arrive anyway.
                log.warning("could not unsubscribe the get endpoint: %r", exc)
            self._service = None
        if self._in_hand:
            await asyncio.gather(*self._in_hand, return_exceptions=True)

    async def _accept(self, request: Request) -> None:
        # Waiting for a slot here holds back the subscription: backpressure, not a pile of tasks.
        await self._slots.acquire()
        task = asyncio.create_task(self._answer(request))
        self._in_hand.add(task)
        task.add_done_callback(self._in_hand.discard)

    async def _answer(self, request: Request) -> None:
        try:
            await self._respond(request)
        except Exception as exc:
            # No reply subject (a plain publish), or NATS went away: nobody is left to answer.
            log.warning("could not answer a get request: %r", exc)
        finally:
            self._slots.release()

    async def _respond(self, request: Request) -> None:
        try:
            query = _get_job_decoder.decode(request.data)
        except msgspec.DecodeError as exc:
            await request.respond_error("400", _header_safe(f"not a GetJob request: {exc}"))
            return
        try:
            reply = await get_job(query, self._store)
        except Exception:
            log.exception("get failed", extra={"job_id": str(query.job_id)})
            # The gateway answers 503 for this, never a wrong 404.
            await request.respond_error("503", "job store unavailable")
            return
        body = _encoder.encode(reply)
        if len(body) > self._nc.max_payload:
            # Output near the 8 MiB limit plus the input may not fit one message.
            log.error("reply over max_payload", extra={"job_id": str(query.job_id)})
            await request.respond_error("413", "job too large for a reply")
            return
        await request.respond(body)
