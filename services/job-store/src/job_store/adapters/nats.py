"""NATS behind the job-store's ports: change announcements, stored outputs (the Object Store),
and the read endpoints (`get`, `list`, `stuck`, `history`, `versions`).

The endpoints are one NATS micro service (discoverable with `$SRV.PING`/`INFO`/`STATS`), in the
queue group every replica shares, so each request is answered by exactly one replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any, Final

import msgspec
from nats import micro
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import ObjectNotFoundError
from nats.js.object_store import ObjectStore
from nats.micro.request import Request
from nats.micro.service import Service as MicroService

from job_store.budgets import release_budget, reserve_budget, usage_report
from job_store.ports import BudgetStore, JobStore
from job_store.reads import (
    RequestRejected,
    get_job,
    job_history,
    job_versions,
    list_jobs,
    stuck_jobs,
)
from jobs_proto.api import (
    FindStuckJobs,
    GetJob,
    GetJobHistory,
    GetJobVersions,
    JobChanged,
    ListJobs,
)
from jobs_proto.spend import GetUsage, ReleaseBudget, ReserveBudget
from jobs_proto.stream import DEV_CAPACITY, Capacity
from jobs_proto.subjects import Subjects
from jobs_runtime import tracing
from jobs_runtime.bus import server_has_all
from jobs_runtime.results import load_result, result_store

log = logging.getLogger(__name__)

SERVICE_NAME: Final = "job-store"
_encoder: Final = msgspec.json.Encoder()


class NatsChangeAnnouncer:
    """The `ChangeAnnouncer` port: the job's new state on core NATS at `job_change.<jobId>`."""

    def __init__(self, nc: NATS, subjects: Subjects) -> None:
        self._nc = nc
        self._subjects = subjects

    async def announce(self, change: JobChanged) -> None:
        body = _encoder.encode(change)
        if len(body) > self._nc.max_payload:
            # An output near the size limit: announce the change without it (listeners that
            # want it read the job, whose reply says the same if it cannot carry it either).
            job = msgspec.structs.replace(change.job, output=None)
            body = _encoder.encode(msgspec.structs.replace(change, job=job, output_omitted=True))
        subject = self._subjects.job_change(change.job.job_id)
        if not tracing.ENABLED:
            await self._nc.publish(subject, body)
            return
        # The gateway's push of this change to its event streams follows from this span.
        attributes = {"job.id": str(change.job.job_id), "job.status": change.job.status}
        with tracing.span("announce job_change", kind="producer", attributes=attributes):
            await self._nc.publish(subject, body, headers=tracing.inject({}))


class NatsResultLoader:
    """The `ResultLoader` port: outputs stored aside in the jobs stream's results bucket."""

    def __init__(
        self, js: JetStreamContext, jobs_stream: str, capacity: Capacity = DEV_CAPACITY
    ) -> None:
        self._js = js
        self._jobs_stream = jobs_stream
        self._capacity = capacity
        self._store: ObjectStore | None = None

    async def load(self, ref: str) -> str | None:
        if self._store is None:
            # Opened (or created) on first use: most completions carry their output inline.
            # Created as its writers create it, never changed from here: its writers own it.
            self._store = await result_store(
                self._js,
                self._jobs_stream,
                replicas=self._capacity.replicas,
                max_bytes=self._capacity.results_store_max_bytes,
                reconcile=False,
            )
        try:
            return await load_result(self._store, ref)
        except ObjectNotFoundError:
            return None


def _header_safe(text: str, limit: int = 200) -> str:
    # The description travels in a header: one line, bounded.
    return " ".join(text.split())[:limit]


# One read endpoint: the request type it decodes and the handler answering it, given the
# largest body a reply may have.
_Answer = Callable[[Any, int], Awaitable[msgspec.Struct]]


class JobStoreEndpoints:
    """Serves the reads: `get` (`GetJob` -> `JobReply`), `list` (`ListJobs` -> `JobPage`),
    `stuck` (`FindStuckJobs` -> `StuckJobs`), `history` (`GetJobHistory` -> `JobHistory`),
    `versions` (`GetJobVersions` -> `JobVersions`, the gateway's resync of its open streams);
    and with `budgets` the budget requests: `reserve` (`ReserveBudget` -> `BudgetDecision`),
    `release` (`ReleaseBudget` -> `BudgetDecision`), `usage` (`GetUsage` -> `UsageReport`).

    A request that does not decode gets a `400` error reply on `get` (as before) and `422` on
    the others (their docstrings in `jobs_proto.api` list the codes); a handler's
    `RequestRejected` its own code; a store failure `503`. nats-py runs a subscription's
    callbacks one after another, so each request is answered in a task of its own (at most
    `concurrency` at once) and one slow read never queues the rest.
    """

    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        store: JobStore,
        *,
        budgets: BudgetStore | None = None,
        concurrency: int = 64,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._store = store
        self._budgets = budgets
        self._slots = asyncio.Semaphore(concurrency)
        self._in_hand: set[asyncio.Task[None]] = set()
        self._service: MicroService | None = None

    async def start(self) -> None:
        self._service = await micro.add_service(
            self._nc,
            name=SERVICE_NAME,
            version=metadata.version("job-store"),
            description="Jobs for their owners, and stuck jobs for the reconciler",
        )
        store = self._store
        endpoints: list[tuple[str, str, type[msgspec.Struct], str, _Answer]] = [
            (
                "get",
                self._subjects.get_job,
                GetJob,
                "400",
                lambda q, n: get_job(q, store, max_bytes=n),
            ),
            (
                "list",
                self._subjects.list_jobs,
                ListJobs,
                "422",
                lambda q, n: list_jobs(q, store, max_bytes=n),
            ),
            (
                "stuck",
                self._subjects.stuck_jobs,
                FindStuckJobs,
                "422",
                lambda q, n: stuck_jobs(q, store, max_bytes=n),
            ),
            (
                "history",
                self._subjects.job_history,
                GetJobHistory,
                "422",
                lambda q, n: job_history(q, store, max_bytes=n),
            ),
            (
                "versions",
                self._subjects.job_versions,
                GetJobVersions,
                "422",
                lambda q, n: job_versions(q, store),
            ),
        ]
        budgets = self._budgets
        if budgets is not None:
            endpoints += [
                (
                    "reserve",
                    self._subjects.reserve_budget,
                    ReserveBudget,
                    "422",
                    lambda q, n: reserve_budget(q, budgets),
                ),
                (
                    "release",
                    self._subjects.release_budget,
                    ReleaseBudget,
                    "422",
                    lambda q, n: release_budget(q, budgets),
                ),
                (
                    "usage",
                    self._subjects.usage,
                    GetUsage,
                    "422",
                    lambda q, n: usage_report(q, budgets),
                ),
            ]
        for name, subject, request_type, bad_request, answer in endpoints:
            await self._service.add_endpoint(
                name=name,
                subject=subject,
                handler=self._acceptor(
                    name, msgspec.json.Decoder(request_type), bad_request, answer
                ),
            )
        # Round trip to the server: once this returns, requests reach us (readiness relies on it).
        await server_has_all(self._nc)

    async def stop(self) -> None:
        """Stop taking requests (other replicas get them), then finish those in hand."""
        if self._service is not None:
            try:
                await self._service.stop()
            except Exception as exc:
                # The connection is already closed or draining: no request can arrive anyway.
                log.warning("could not unsubscribe the read endpoints: %r", exc)
            self._service = None
        if self._in_hand:
            await asyncio.gather(*self._in_hand, return_exceptions=True)

    def _acceptor(
        self,
        name: str,
        decoder: msgspec.json.Decoder[Any],
        bad_request: str,
        answer: _Answer,
    ) -> Callable[[Request], Awaitable[None]]:
        async def accept(request: Request) -> None:
            # Waiting for a slot here holds back the subscription: backpressure, not a pile of
            # tasks.
            await self._slots.acquire()
            task = asyncio.create_task(self._answer(name, request, decoder, bad_request, answer))
            self._in_hand.add(task)
            task.add_done_callback(self._in_hand.discard)

        return accept

    async def _answer(
        self,
        name: str,
        request: Request,
        decoder: msgspec.json.Decoder[Any],
        bad_request: str,
        answer: _Answer,
    ) -> None:
        try:
            await self._respond(name, request, decoder, bad_request, answer)
        except Exception as exc:
            # No reply subject (a plain publish), or NATS went away: nobody is left to answer.
            log.warning("could not answer a %s request: %r", name, exc)
        finally:
            self._slots.release()

    async def _respond(
        self,
        name: str,
        request: Request,
        decoder: msgspec.json.Decoder[Any],
        bad_request: str,
        answer: _Answer,
    ) -> None:
        try:
            query = decoder.decode(request.data)
        except msgspec.DecodeError as exc:
            detail = f"not a {decoder.type.__name__} request: {exc}"
            await request.respond_error(bad_request, _header_safe(detail))
            return
        max_bytes = self._nc.max_payload
        try:
            reply = await answer(query, max_bytes)
        except RequestRejected as rejected:
            await request.respond_error(rejected.code, _header_safe(rejected.detail))
            return
        except Exception:
            log.exception("%s failed", name, extra={"endpoint": name})
            # The gateway answers 503 for this, never a wrong 404.
            await request.respond_error("503", "job store unavailable")
            return
        body = _encoder.encode(reply)
        if len(body) > max_bytes:
            # Every handler cuts its answer to `max_bytes`; this is a safety net for a bug.
            log.error("reply over max_payload", extra={"endpoint": name})
            await request.respond_error("413", "job too large for a reply")
            return
        await request.respond(body)
