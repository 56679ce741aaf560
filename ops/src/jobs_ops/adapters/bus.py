"""NATS for `jobsctl`: connecting once (no endless retries: an operator wants an answer), a job's
events through an ordered ephemeral consumer, the job-store's read endpoints, the parked stream,
and the streams' and consumers' state."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from jobs_ops.config import Settings
from jobs_ops.diagnosis import (
    belongs_to,
    consumer_health,
    replay_message_id,
    replay_target,
    short,
    stream_problems,
)
from jobs_ops.events import JobInStream
from jobs_ops.ports import StoreUnavailable
from jobs_ops.reports import (
    HealthReport,
    ParkedMessage,
    PeerHealth,
    Replayed,
    StreamEvent,
    StreamHealth,
)
from jobs_proto.api import (
    FindStuckJobs,
    GetJob,
    GetJobHistory,
    JobHistory,
    JobHistoryEntry,
    JobReply,
    StuckJobs,
)
from jobs_proto.events import AnyJobEvent, decode_event
from jobs_proto.permissions import OPERATOR, inbox_prefix
from jobs_proto.stream import (
    PARK_DETAIL_HEADER,
    PARK_REASON_HEADER,
    PARK_SUBJECT_HEADER,
    job_store_consumer,
)
from jobs_proto.subjects import MSG_ID_HEADER, Subjects, message_id
from jobs_runtime.bus import auth_options

# The durable consumer that applies events to the store (`jobs_proto.stream`).
JOB_STORE_CONSUMER: Final = job_store_consumer(Subjects()).durable
_ERROR_CODE: Final = "Nats-Service-Error-Code"
_ERROR_TEXT: Final = "Nats-Service-Error"
_encoder: Final = msgspec.json.Encoder()
R = TypeVar("R")


class Unreachable(Exception):
    """NATS does not answer, or refuses this user: nothing can be read."""


async def connect(settings: Settings) -> NATS:
    async def quiet(exc: Exception) -> None:
        del exc  # the failure surfaces as the connect's own exception

    try:
        # Each server tried twice, then the error (nats-py's 0 means forever, and with
        # reconnecting off a refused first connect never returns); the whole attempt bounded.
        return await asyncio.wait_for(
            nats.connect(
                servers=settings.nats_url.split(","),
                name="jobsctl",
                connect_timeout=settings.ops_timeout_s,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                inbox_prefix=inbox_prefix(OPERATOR),
                error_cb=quiet,
                **auth_options(settings.nats_auth),
            ),
            timeout=settings.ops_timeout_s * (1 + settings.nats_url.count(",")) + 1,
        )
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise Unreachable(f"cannot reach NATS at {settings.nats_url}: {reason}") from None


class Bus:
    """Every NATS read and write `jobsctl` makes, over one connection."""

    def __init__(self, nc: NATS, settings: Settings) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=settings.ops_timeout_s)
        self._subjects = settings.subjects
        self._stream = settings.jobs_stream
        self._timeout = settings.ops_timeout_s
        # Names this run's replays (`replay_message_id`).
        self._attempt = uuid.uuid4().hex[:12]

    @property
    def parked_stream(self) -> str:
        return f"{self._stream}_PARKED"

    # -- the jobs stream ---------------------------------------------------------------------

    async def job_events(self, job_id: uuid.UUID) -> JobInStream:
        """Every message of the job still in the stream, in order."""
        subject = f"{self._subjects.prefix}job.*.{job_id}"
        messages = await self._read_all(self._stream, subject)
        found = JobInStream()
        for msg in messages:
            try:
                kind = self._subjects.parse(msg.subject)[0]
            except ValueError:
                kind = "?"
            found.note(msg.data)
            found.events.append(
                StreamEvent(
                    seq=msg.metadata.sequence.stream,
                    time=msg.metadata.timestamp,
                    kind=kind,
                    subject=msg.subject,
                    msg_id=(msg.headers or {}).get(MSG_ID_HEADER),
                    body=short(msg.data),
                )
            )
        return found

    async def _read_all(self, stream: str, subject: str) -> list[Msg]:
        """The messages on `subject` (a filter) in `stream`, through an ordered consumer; counted
        first, so an empty answer needs no wait."""
        try:
            info = await self._js.stream_info(stream, subjects_filter=subject)
        except NotFoundError:
            return []
        expected = sum((info.state.subjects or {}).values())
        if expected == 0:
            return []
        sub = await self._js.subscribe(
            subject,
            stream=stream,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.ALL,
            inactive_threshold=5.0,
        )
        messages: list[Msg] = []
        try:
            while len(messages) < expected:
                msg = await sub.next_msg(timeout=self._timeout)
                messages.append(msg)
                if msg.metadata.num_pending == 0:
                    break
        finally:
            # The server deletes the consumer once idle for `inactive_threshold`: `jobsctl` has no
            # right to delete consumers, so it can never remove a service's durable one.
            await sub.unsubscribe()
        return messages

    # -- the job-store's endpoints -----------------------------------------------------------

    async def _ask(self, subject: str, request: msgspec.Struct, reply: type[R]) -> R:
        try:
            msg = await self._nc.request(subject, _encoder.encode(request), timeout=self._timeout)
        except NoRespondersError:
            raise StoreUnavailable("the job-store is not answering (no responders)") from None
        except NatsTimeout:
            raise StoreUnavailable("the job-store did not answer in time") from None
        headers = msg.headers or {}
        if code := headers.get(_ERROR_CODE):
            raise StoreUnavailable(f"the job-store answered {code}: {headers.get(_ERROR_TEXT)}")
        return msgspec.json.decode(msg.data, type=reply)

    async def job(self, job_id: uuid.UUID, user_id: str) -> JobReply:
        return await self._ask(
            self._subjects.get_job, GetJob(job_id=job_id, user_id=user_id), JobReply
        )

    async def history(self, job_id: uuid.UUID, user_id: str) -> list[JobHistoryEntry] | None:
        entries: list[JobHistoryEntry] = []
        cursor: str | None = None
        while True:
            page = await self._ask(
                self._subjects.job_history,
                GetJobHistory(job_id=job_id, user_id=user_id, cursor=cursor),
                JobHistory,
            )
            if page.entries is None:
                return None
            entries += page.entries
            if page.next_cursor is None:
                return entries
            cursor = page.next_cursor

    async def stuck(self, older_than_s: float, limit: int) -> StuckJobs:
        request = FindStuckJobs(
            older_than_s=older_than_s, limit=limit, pending_older_than_s=older_than_s
        )
        return await self._ask(self._subjects.stuck_jobs, request, StuckJobs)

    # -- the parked stream -------------------------------------------------------------------

    async def parked(self) -> list[tuple[ParkedMessage, bytes]]:
        found = []
        for msg in await self._read_all(self.parked_stream, self._subjects.all_parked):
            headers = msg.headers or {}
            original = headers.get(PARK_SUBJECT_HEADER)
            found.append(
                (
                    ParkedMessage(
                        seq=msg.metadata.sequence.stream,
                        time=msg.metadata.timestamp,
                        reason=headers.get(PARK_REASON_HEADER),
                        original_subject=original,
                        detail=headers.get(PARK_DETAIL_HEADER),
                        msg_id=headers.get(MSG_ID_HEADER),
                        body=short(msg.data),
                        replayable=replay_target(self._subjects, original) is not None,
                    ),
                    msg.data,
                )
            )
        return found

    async def replay(self, parked: ParkedMessage, body: bytes) -> Replayed:
        """Publish the parked body to its original subject; remove the parked copy once the
        job-store has applied it.

        The job-store parks an event under an id derived from the event itself, so one that
        fails again within the parked stream's duplicate window is dropped as a duplicate
        rather than parked anew: removing the copy before knowing would lose it from the dead
        letters. So this waits for the job-store's consumer to pass the replay, and keeps the
        copy unless the job's history now holds the event."""
        target = replay_target(self._subjects, parked.original_subject)
        if target is None:
            return Replayed(
                seq=parked.seq,
                outcome="skipped",
                subject=parked.original_subject,
                detail="not a job event of this deployment: nothing to send it back to",
            )
        ack = await self._js.publish(
            target,
            body,
            headers={
                MSG_ID_HEADER: replay_message_id(self.parked_stream, parked.seq, self._attempt)
            },
            stream=self._stream,
        )
        at = f"{self._stream} seq {ack.seq}"
        try:
            event = decode_event(body)
        except msgspec.DecodeError:
            event = None  # parked as it came: parked again, it gets a new id (its new seq)
        if event is not None:
            if not await self._consumed(ack.seq):
                return Replayed(
                    seq=parked.seq,
                    outcome="kept",
                    subject=target,
                    detail=f"{at}; the job-store has not consumed it yet: replay it again later",
                )
            if not await self._applied(event):
                return Replayed(
                    seq=parked.seq,
                    outcome="kept",
                    subject=target,
                    detail=f"{at}; the job-store did not apply it (parked again): kept here",
                )
        await self._js.delete_msg(self.parked_stream, parked.seq)
        return Replayed(seq=parked.seq, outcome="replayed", subject=target, detail=at)

    async def _consumed(self, seq: int) -> bool:
        """Whether the job-store's consumer has settled everything up to `seq` (waited for)."""
        deadline = asyncio.get_running_loop().time() + max(self._timeout, 10.0)
        while True:
            info = await self._js.consumer_info(self._stream, JOB_STORE_CONSUMER)
            if info.ack_floor is not None and info.ack_floor.stream_seq >= seq:
                return True
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.1)

    async def _applied(self, event: AnyJobEvent) -> bool:
        """Whether the job's history holds `event` (applied now, or before)."""
        owner = (await self.job_events(event.job_id)).owner
        if owner is None:
            return False
        history = await self.history(event.job_id, owner)
        return any(entry.message_id == message_id(event) for entry in history or [])

    # -- health ------------------------------------------------------------------------------

    async def health(self) -> HealthReport:
        now = datetime.now(UTC)
        infos: list[js_api.StreamInfo] = []
        while True:
            page = await self._js.streams_info(offset=len(infos))
            if not page:
                break
            infos += page
        mine = sorted(
            (i for i in infos if i.config.name and belongs_to(i.config.name, self._stream)),
            key=lambda i: (i.config.name != self._stream, i.config.name or ""),
        )
        streams = [await self._stream_health(info, now) for info in mine]
        missing = [] if any(s.name == self._stream for s in streams) else [self._stream]
        healthy = not missing and not any(
            s.problems or any(c.problems for c in s.consumers) for s in streams
        )
        return HealthReport(healthy=healthy, streams=streams, missing=missing)

    async def _stream_health(self, info: js_api.StreamInfo, now: datetime) -> StreamHealth:
        name = info.config.name or ""
        replicas = info.config.num_replicas or 1
        cluster = info.cluster
        peers = [_peer(p) for p in (cluster.replicas or [])] if cluster else []
        leader = cluster.leader if cluster else None
        max_bytes = info.config.max_bytes if info.config.max_bytes is not None else -1
        consumers = []
        for c in await self._consumers(name):
            consumers.append(
                consumer_health(
                    name=c.name,
                    durable=bool(c.config.durable_name),
                    pending=c.num_pending or 0,
                    ack_pending=c.num_ack_pending or 0,
                    max_ack_pending=c.config.max_ack_pending or 0,
                    redelivered=c.num_redelivered or 0,
                    waiting=c.num_waiting or 0,
                    last_active=c.delivered.last_active if c.delivered else None,
                    now=now,
                )
            )
        return StreamHealth(
            name=name,
            replicas=replicas,
            leader=leader,
            peers=peers,
            messages=info.state.messages,
            bytes=info.state.bytes,
            max_bytes=max_bytes,
            consumers=sorted(consumers, key=_by_name),
            problems=stream_problems(
                replicas=replicas,
                leader=leader,
                peers=peers,
                clustered=replicas > 1 or bool(peers),
                stored_bytes=info.state.bytes,
                max_bytes=max_bytes,
            ),
        )

    async def _consumers(self, stream: str) -> list[js_api.ConsumerInfo]:
        found: list[js_api.ConsumerInfo] = []
        while True:
            page = await self._js.consumers_info(stream, offset=len(found))
            if not page:
                return found
            found += page


def _by_name(item: Any) -> str:
    return str(item.name)


def _peer(peer: js_api.PeerInfo) -> PeerHealth:
    return PeerHealth(
        name=peer.name or "?",
        current=bool(peer.current),
        offline=bool(peer.offline),
        lag=peer.lag or 0,
        # The server reports how long ago the replica was last heard from, in nanoseconds.
        active_s=None if peer.active is None else round(peer.active / 1e9, 3),
    )


__all__: list[str] = ["Bus", "StoreUnavailable", "Unreachable", "connect"]
