"""The handler's ports in memory, once for every test of the service: the `JOBS` stream with its
message-id deduplication, the results bucket, the parked stream, progress, the output log, and
an observer that counts. `down = True` makes a port raise `Unavailable`, as the NATS adapters do
while NATS is away; `tests/integration/test_ports_contract.py` holds each fake to its adapter's
behaviour (the output log's: `tests/e2e/test_webhook_output.py`)."""

from __future__ import annotations

import uuid
from collections import Counter

from jobs_proto.api import JobProgress
from jobs_proto.events import JobEvent
from jobs_proto.output import beyond
from jobs_proto.subjects import SubjectError, message_id
from jobs_runtime.errors import Unavailable


class FakeEvents:
    """`JOBS`: an event whose message id is already stored is a duplicate, and not kept again."""

    def __init__(self, *, down: bool = False) -> None:
        self.stored: list[JobEvent] = []
        self.down = down

    async def store(self, event: JobEvent) -> bool:
        if self.down:
            raise Unavailable("nats: no responders available for request")
        duplicate = any(message_id(e) == message_id(event) for e in self.stored)
        if not duplicate:
            self.stored.append(event)
        return duplicate


class FakeProgress:
    def __init__(self, *, down: bool = False) -> None:
        self.sent: list[JobProgress] = []
        self.down = down

    async def send(self, progress: JobProgress) -> None:
        if self.down:
            raise Unavailable("nats: connection closed")
        self.sent.append(progress)


class FakeOutput:
    """The output log of each prediction as its text: an offer (from offset 0) appends only what
    the text lacks, and a prediction id that is no subject token is refused, as `OutputLog` and
    `Subjects.output` do."""

    def __init__(self, *, down: bool = False) -> None:
        self.logs: dict[tuple[uuid.UUID, str], str] = {}
        self.down = down

    async def offer(self, job_id: uuid.UUID, prediction_id: str, text: str) -> None:
        if "." in prediction_id or not prediction_id:
            raise SubjectError(f"prediction id is not one subject token: {prediction_id!r}")
        if self.down:
            raise Unavailable("output log: no responders")
        held = self.logs.get((job_id, prediction_id), "")
        self.logs[(job_id, prediction_id)] = held + beyond(0, text, len(held))


class FakeResults:
    """The results bucket: one object per prediction, replaced when stored again."""

    def __init__(self, *, down: bool = False) -> None:
        self.objects: dict[str, str] = {}
        self.down = down

    async def store(self, prediction_id: str, output: str) -> str:
        if self.down:
            raise Unavailable("object store: no responders")
        ref = f"output/{prediction_id}"
        self.objects[ref] = output
        return ref


class FakeParking:
    """The parked stream: one copy per `webhook-id`, the first one kept."""

    def __init__(self, *, down: bool = False) -> None:
        self.parked: dict[str, tuple[bytes, str, str]] = {}
        self.down = down

    async def park(self, webhook_id: str, body: bytes, reason: str, detail: str) -> bool:
        if self.down:
            raise Unavailable("parked stream: no responders")
        duplicate = webhook_id in self.parked
        self.parked.setdefault(webhook_id, (body, reason, detail))
        return duplicate


class FakeBus:
    """The four NATS ports of one connection, which go down together."""

    def __init__(self) -> None:
        self.events = FakeEvents()
        self.progress = FakeProgress()
        self.results = FakeResults()
        self.parking = FakeParking()

    @property
    def down(self) -> bool:
        return self.events.down

    @down.setter
    def down(self, down: bool) -> None:
        for port in (self.events, self.progress, self.results, self.parking):
            port.down = down


class CountingObserver:
    """A `WebhookObserver` counting what the endpoint reported, by the metric's reason label."""

    def __init__(self) -> None:
        self.webhooks: Counter[str] = Counter()
        self.large_bodies_seen: list[int] = []

    def stored(self, duplicate: bool) -> None:
        self.webhooks["duplicate" if duplicate else "stored"] += 1

    def parked(self) -> None:
        self.webhooks["parked"] += 1

    def refused(self, reason: str) -> None:
        self.webhooks[reason] += 1

    def not_stored(self, reason: str) -> None:
        self.webhooks[reason] += 1

    def output_not_offered(self) -> None:
        self.webhooks["output_not_offered"] += 1

    def large_bodies(self, in_progress: int) -> None:
        self.large_bodies_seen.append(in_progress)
