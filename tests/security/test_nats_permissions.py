"""Each service's NATS user against a real server with the allow lists of
`jobs_proto.permissions`: what a service must not do is refused by the server, what it needs
goes through (the whole flow with permissions on is tests/e2e)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from ai_runner.adapters import claims, limits
from gateway.adapters import idempotency
from jobs_proto import permissions
from jobs_proto.permissions import SERVICES, inbox_prefix, service_permissions, service_users
from jobs_proto.subjects import Subjects
from jobs_runtime import results
from jobs_runtime.bus import connect
from jobs_runtime.results import load_result, result_store, store_result
from jobs_runtime.settings import NatsAuth
from jobs_testkit.servers import NatsServer
from jobs_testkit.stack import SERVICES as STACK_SERVICES

JOB = uuid.UUID("6b1d8a8e-0f0e-4a43-9d59-0c5b7e6d1a21")


@dataclass(frozen=True)
class Namespace:
    """One test's users, under a prefix and stream of its own."""

    server: NatsServer
    subjects: Subjects
    stream: str
    passwords: dict[str, str]


@pytest.fixture
def secured_server(nats_server: NatsServer | None, tmp_path: Path) -> Iterator[NatsServer]:
    """The session's server when this session runs it, else one of this test's own: either
    way one whose users can be added."""
    if nats_server is not None:
        yield nats_server
        return
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def namespace(secured_server: NatsServer) -> Namespace:
    tag = uuid.uuid4().hex[:10]
    ns = Namespace(
        server=secured_server,
        subjects=Subjects(f"p{tag}."),
        stream=f"JOBS_{tag}",
        passwords={service: uuid.uuid4().hex for service in SERVICES},
    )
    secured_server.authorize(
        service_users(ns.subjects, ns.stream, ns.passwords, user_prefix=ns.subjects.prefix)
    )
    return ns


class Refusals:
    """A service's connection and the refusals the server sent it, in order."""

    def __init__(self) -> None:
        self.errors: asyncio.Queue[str] = asyncio.Queue()
        self.nc = NATS()

    async def on_error(self, exc: Exception) -> None:
        await self.errors.put(str(exc))

    async def next_refusal(self) -> str:
        """The next error the server sent: waited for, since a refusal of a publish with a
        reply subject may come after later traffic (the test's timeout bounds the wait)."""
        return await self.errors.get()


async def _as(ns: Namespace, service: str) -> Refusals:
    refusals = Refusals()
    await refusals.nc.connect(
        ns.server.url,
        user=f"{ns.subjects.prefix}{service}",
        password=ns.passwords[service],
        inbox_prefix=inbox_prefix(service),
        error_cb=refusals.on_error,
        max_reconnect_attempts=0,
    )
    return refusals


@pytest.fixture
async def connections(namespace: Namespace) -> AsyncIterator[dict[str, Refusals]]:
    opened = {service: await _as(namespace, service) for service in SERVICES}
    yield opened
    for refusals in opened.values():
        await refusals.nc.close()


def _forbidden_publishes(ns: Namespace) -> list[tuple[str, str]]:
    p, s, jobs = ns.subjects.prefix, ns.subjects, ns.stream
    delete_jobs = f"$JS.API.STREAM.DELETE.{jobs}"
    purge_jobs = f"$JS.API.STREAM.PURGE.{jobs}"
    return [
        # The internet-facing gateway: no results, no Replicate facts, no job-store's work.
        ("gateway", f"{p}job.completed.{JOB}"),
        ("gateway", f"{p}job.started.{JOB}"),
        ("gateway", f"{p}job.submitted.{JOB}"),
        ("gateway", f"{p}job.failed.{JOB}"),
        ("gateway", f"{p}job.purged.{JOB}"),
        ("gateway", s.job_change(JOB)),
        ("gateway", s.stuck_jobs),
        ("gateway", delete_jobs),
        ("gateway", purge_jobs),
        ("gateway", f"$JS.API.CONSUMER.MSG.NEXT.{jobs}.ai-runner"),
        ("gateway", f"$JS.ACK.{jobs}.job-store.1.1.1.1.0"),
        ("gateway", f"$KV.{permissions.claims_bucket(jobs)}.{JOB}"),
        # The internet-facing webhook endpoint: no spending Replicate credit, no reads.
        ("webhook-ingest", f"{p}job.requested.{JOB}"),
        ("webhook-ingest", f"{p}job.cancel_requested.{JOB}"),
        ("webhook-ingest", f"{p}job.submitted.{JOB}"),
        ("webhook-ingest", f"{p}job.purged.{JOB}"),
        ("webhook-ingest", s.get_job),
        ("webhook-ingest", s.list_jobs),
        ("webhook-ingest", s.stuck_jobs),
        ("webhook-ingest", s.job_versions),
        ("webhook-ingest", s.job_change(JOB)),
        ("webhook-ingest", f"$JS.API.STREAM.MSG.GET.{jobs}"),
        ("webhook-ingest", f"$JS.API.CONSUMER.CREATE.{jobs}"),
        ("webhook-ingest", f"$KV.{permissions.idempotency_bucket(jobs)}.key"),
        ("webhook-ingest", delete_jobs),
        # The ai-runner: no admissions, no reading users' jobs (the facts it learns by polling,
        # `started` and `completed`, it may publish).
        ("ai-runner", f"{p}job.requested.{JOB}"),
        ("ai-runner", f"{p}job.purged.{JOB}"),
        ("ai-runner", s.get_job),
        ("ai-runner", s.list_jobs),
        ("ai-runner", s.job_versions),
        ("ai-runner", s.job_change(JOB)),
        ("ai-runner", f"$JS.ACK.{jobs}.job-store.1.1.1.1.0"),
        ("ai-runner", purge_jobs),
        # The job-store records facts, it never makes them.
        ("job-store", f"{p}job.requested.{JOB}"),
        ("job-store", f"{p}job.completed.{JOB}"),
        ("job-store", f"{p}job.submitted.{JOB}"),
        ("job-store", s.progress(JOB)),
        ("job-store", s.get_job),
        ("job-store", f"$KV.{permissions.claims_bucket(jobs)}.{JOB}"),
        ("job-store", delete_jobs),
    ]


def _forbidden_subscriptions(ns: Namespace) -> list[tuple[str, str]]:
    s = ns.subjects
    return [
        # Nobody reads another service's replies.
        *((service, "_INBOX.>") for service in SERVICES),
        *(
            (service, f"{inbox_prefix('job-store')}.>")
            for service in SERVICES
            if service != "job-store"
        ),
        ("job-store", f"{inbox_prefix('gateway')}.>"),
        # Only the job-store answers its endpoints.
        ("gateway", s.get_job),
        ("webhook-ingest", s.request("job-store", "*")),
        ("ai-runner", s.list_jobs),
        # Events and announcements: what each does not need to see.
        ("gateway", s.all_events),
        ("webhook-ingest", s.all_events),
        ("webhook-ingest", s.all_job_changes),
        ("webhook-ingest", s.all_progress),
        ("ai-runner", s.all_job_changes),
        ("ai-runner", s.kind("requested")),
        ("job-store", s.all_progress),
    ]


def _refusal(operation: str, subject: str) -> str:
    # As nats-py hands the server's `-ERR` to the error callback: lower-cased.
    return f'nats: permissions violation for {operation} to "{subject}"'.lower()


async def test_every_forbidden_publish_and_request_is_refused_by_the_server(
    namespace: Namespace, connections: dict[str, Refusals]
) -> None:
    cases = _forbidden_publishes(namespace)
    for service, subject in cases:
        refusals = connections[service]
        # A request is a publish with a reply subject: refused alike, before any responder.
        await refusals.nc.publish(subject, b"{}", reply=refusals.nc.new_inbox())
        refusal = await refusals.next_refusal()
        assert refusal == _refusal("publish", subject), service
    assert {service for service, _ in cases} == set(SERVICES)


async def test_every_forbidden_subscription_is_refused_by_the_server(
    namespace: Namespace, connections: dict[str, Refusals]
) -> None:
    for service, subject in _forbidden_subscriptions(namespace):
        refusals = connections[service]
        await refusals.nc.subscribe(subject)
        refusal = await refusals.next_refusal()
        assert refusal == _refusal("subscription", subject), service


def _concrete(subject: str) -> str:
    """A subject an allow-list entry matches: a job id for `*`, one more token for `>`."""
    return subject.replace("*", str(JOB)).replace(">", "x.y")


async def test_everything_allowed_goes_through_before_a_refusal(
    namespace: Namespace, connections: dict[str, Refusals]
) -> None:
    """What the lists allow is never refused: after all of it, the first refusal a service
    gets is for the one forbidden thing sent last (the server answers in order)."""
    forbidden = f"{namespace.subjects.prefix}forbidden.everywhere"
    for service, perms in service_permissions(namespace.subjects, namespace.stream).items():
        refusals = connections[service]
        for subject in perms.subscribe:
            await refusals.nc.subscribe(subject)
        await refusals.nc.subscribe(forbidden)
        assert await refusals.next_refusal() == _refusal("subscription", forbidden), service
        # Without a reply subject: the JetStream API ignores requests it cannot answer.
        for subject in perms.publish:
            await refusals.nc.publish(_concrete(subject), b"")
        await refusals.nc.publish(forbidden, b"")
        assert await refusals.next_refusal() == _refusal("publish", forbidden), service


def test_the_lists_name_the_buckets_the_services_use() -> None:
    assert permissions.idempotency_bucket("J") == idempotency.bucket_name("J")
    assert permissions.claims_bucket("J") == claims.bucket_name("J")
    assert permissions.limits_bucket("J") == limits.bucket_name("J")
    assert permissions.results_bucket("J") == results.bucket_name("J")
    assert set(SERVICES) == set(STACK_SERVICES)


async def _connected(ns: Namespace, service: str) -> NATS:
    return await connect(
        ns.server.url,
        service,
        auth=NatsAuth(user=f"{ns.subjects.prefix}{service}", password=ns.passwords[service]),
        inbox=inbox_prefix(service),
    )


async def test_a_large_result_goes_from_the_writers_to_the_job_store_with_their_own_rights(
    namespace: Namespace,
) -> None:
    """The object store (chunks, meta, ordered consumer, flow control) as each service uses it,
    through the runtime's own connect: webhook-ingest and the ai-runner put, the job-store
    gets; the e2e flow's outputs are too small to go this way."""
    ingest = await _connected(namespace, "webhook-ingest")
    runner = await _connected(namespace, "ai-runner")
    store = await _connected(namespace, "job-store")
    try:
        output = "x" * (300 * 1024)  # several chunks
        put_by_ingest = await result_store(ingest.jetstream(), namespace.stream)
        ref = await store_result(put_by_ingest, "p-ingest", output)
        put_by_runner = await result_store(runner.jetstream(), namespace.stream)
        await store_result(put_by_runner, "p-ingest", output + "!")  # a retried webhook's overwrite
        read_by_store = await result_store(store.jetstream(), namespace.stream)
        assert await load_result(read_by_store, ref) == output + "!"
    finally:
        for nc in (ingest, runner, store):
            await nc.close()
    assert namespace.server.violations(namespace.subjects.prefix) == []


async def test_the_operators_user_reads_and_replays_but_never_destroys(
    namespace: Namespace,
) -> None:
    """`jobsctl`'s user (`ops_permissions`): what it needs goes through, and it can neither
    remove a stream or a service's consumer nor take a service's messages or replies."""
    ns = namespace
    password = uuid.uuid4().hex
    ns.server.authorize(
        [
            permissions.NatsUser(
                user=f"{ns.subjects.prefix}ops",
                password=password,
                permissions=permissions.ops_permissions(ns.subjects, ns.stream),
            )
        ]
    )
    refusals = Refusals()
    await refusals.nc.connect(
        ns.server.url,
        user=f"{ns.subjects.prefix}ops",
        password=password,
        inbox_prefix=inbox_prefix("ops"),
        error_cb=refusals.on_error,
        max_reconnect_attempts=0,
    )
    try:
        s, jobs = ns.subjects, ns.stream
        # Everything the list allows first, then each forbidden thing: its refusal must be the
        # first to arrive (the server answers in order).
        ops = permissions.ops_permissions(s, jobs)
        for subject in ops.subscribe:
            await refusals.nc.subscribe(_concrete(subject))
        for subject in ops.publish:
            await refusals.nc.publish(_concrete(subject), b"")
        forbidden = [
            f"$JS.API.STREAM.DELETE.{jobs}",
            f"$JS.API.STREAM.PURGE.{jobs}",
            f"$JS.API.STREAM.MSG.DELETE.{jobs}",
            f"$JS.API.CONSUMER.DELETE.{jobs}.job-store",
            f"$JS.API.CONSUMER.MSG.NEXT.{jobs}.job-store",
            f"$JS.ACK.{jobs}.job-store.1.1.1.1.0",
            f"$KV.{permissions.claims_bucket(jobs)}.{JOB}",
            s.job_change(JOB),
            s.reserve_budget,
        ]
        for subject in forbidden:
            await refusals.nc.publish(subject, b"")
            assert await refusals.next_refusal() == _refusal("publish", subject)
        for subject in ("_INBOX.>", f"{inbox_prefix('gateway')}.>", s.all_events):
            await refusals.nc.subscribe(subject)
            assert await refusals.next_refusal() == _refusal("subscription", subject)
    finally:
        await refusals.nc.close()
