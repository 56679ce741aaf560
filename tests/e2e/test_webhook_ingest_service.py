"""The `webhook-ingest` command end to end: signed HTTP in, events in JetStream (large results in
the results Object Store) and progress on core NATS out, every refusal with its status, the
abuse checks counted in `/metrics`, slow large uploads that cannot starve a real one, NATS going
away in the middle, and the attacks on the job a webhook speaks for (a signed webhook replayed
against another job, one naming no job)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from standardwebhooks.webhooks import Webhook

from jobs_proto.api import JobProgress
from jobs_proto.events import AnyJobEvent, JobCompleted, JobStarted, decode_event
from jobs_proto.stream import (
    PARK_DETAIL_HEADER,
    PARK_REASON_HEADER,
    StreamSpec,
    jobs_stream,
    parked_stream,
)
from jobs_proto.subjects import MSG_ID_HEADER, Subjects
from jobs_runtime.results import load_result, result_store
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.waiting import eventually

MIB: Final = 1024 * 1024
MAX_BYTES: Final = 10 * MIB  # the smallest limit the contract allows, to keep bodies small
CURRENT_SECRET: Final = "whsec_" + base64.b64encode(b"current webhook-ingest test key").decode()
# Still configured while a rotation is under way; listed first so the current one is tried second.
PREVIOUS_SECRET: Final = "whsec_" + base64.b64encode(b"previous webhook-ingest test key").decode()
UNKNOWN_SECRET: Final = "whsec_" + base64.b64encode(b"somebody else's key").decode()
PATH: Final = "/api/webhooks/replicate"


def sign(
    body: bytes, webhook_id: str, secret: str = CURRENT_SECRET, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed as Replicate signs them."""
    at = at or datetime.now(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body.decode()),
    }


@dataclass
class RunningIngest:
    process: ServiceProcess
    url: str
    ready_url: str
    http: httpx.AsyncClient

    async def post(
        self,
        body: bytes | AsyncIterator[bytes],
        *,
        job: uuid.UUID | str | None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        params = {} if job is None else {"job": str(job)}
        return await self.http.post(self.url, params=params, content=body, headers=headers)

    async def send(self, body: bytes, *, job: uuid.UUID, webhook_id: str) -> httpx.Response:
        """A webhook signed with the current secret, sent now."""
        return await self.post(body, job=job, headers=sign(body, webhook_id))

    async def send_unbound(self, body: bytes, *, webhook_id: str) -> httpx.Response:
        """A webhook signed with the current secret, sent now to the URL without `?job=`."""
        return await self.post(body, job=None, headers=sign(body, webhook_id))


@contextmanager
def ingest_process(
    nats_url: str,
    stream: str,
    subjects: Subjects,
    log_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[ServiceProcess]:
    """The `webhook-ingest` command as an operator runs it; it must exit 0 on SIGTERM."""
    env = {
        **(extra_env or {}),
        "NATS_URL": nats_url,
        "JOBS_STREAM": stream,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
        "HTTP_PORT": str(free_port()),
        "REPLICATE_WEBHOOK_SECRET": f"{PREVIOUS_SECRET},{CURRENT_SECRET}",
        "WEBHOOK_MAX_BYTES": str(MAX_BYTES),
    }
    with ServiceProcess([command_path("webhook-ingest")], env, log_path) as process:
        yield process
        assert process.terminate() == 0, process.log
        log = process.log
        for secret in (CURRENT_SECRET, PREVIOUS_SECRET):
            assert secret.removeprefix("whsec_") not in log
        assert '"level":"error"' not in log, log


def urls(process: ServiceProcess) -> tuple[str, str]:
    """The webhook URL and the readiness URL of a started process."""
    http_port, admin_port = process.env["HTTP_PORT"], process.env["ADMIN_PORT"]
    return f"http://127.0.0.1:{http_port}{PATH}", f"http://127.0.0.1:{admin_port}/readyz"


@pytest.fixture
async def ingest(
    nats_url: str, jobs_stream_ready: StreamSpec, subjects: Subjects, tmp_path: Path
) -> AsyncIterator[RunningIngest]:
    """A ready `webhook-ingest` on this test's stream and subject prefix."""
    with ingest_process(
        nats_url, jobs_stream_ready.name, subjects, tmp_path / "webhook-ingest.log"
    ) as process:
        url, ready_url = urls(process)
        process.wait_http(ready_url)
        async with httpx.AsyncClient(timeout=30.0) as http:
            yield RunningIngest(process, url, ready_url, http)


@dataclass(frozen=True)
class StoredEvent:
    subject: str
    msg_id: str | None
    event: AnyJobEvent


async def stored_events(js: JetStreamContext, stream: str) -> list[StoredEvent]:
    """Every message of the stream, oldest first."""
    state = (await js.stream_info(stream)).state
    if state.messages == 0:
        return []
    found = []
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        assert msg.data is not None
        msg_id = (msg.headers or {}).get(MSG_ID_HEADER)
        found.append(StoredEvent(msg.subject or "", msg_id, decode_event(msg.data)))
    return found


def hook(job: uuid.UUID) -> str:
    """The webhook URL the ai-runner creates a job's prediction with."""
    return f"https://hooks.example{PATH}?job={job}"


def prediction(status: str, output: Any = None, *, job: uuid.UUID | None, **fields: Any) -> bytes:
    """A prediction as Replicate sends it, echoing the webhook URL of `job` (None: a prediction
    made elsewhere, whose URL names no job)."""
    body = {
        "id": f"pred-{uuid.uuid4().hex[:10]}",
        "webhook": None if job is None else hook(job),
        "model": "google/gemini-3-pro",
        "status": status,
        "output": output,
        "error": None,
        "logs": "",
        "data_removed": False,
        "metrics": {"predict_time": 1.25} if status == "succeeded" else {},
        **fields,
    }
    return json.dumps(body).encode()


async def test_a_completed_webhook_is_stored_once(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    job_id = uuid.uuid4()
    body = prediction("succeeded", ["Fade in. ", "A lighthouse", "."], job=job_id)

    first = await ingest.send(body, job=job_id, webhook_id="msg_final_1")
    # Replicate's retry of the same final webhook: same id, signed anew.
    again = await ingest.send(body, job=job_id, webhook_id="msg_final_1")

    assert (first.status_code, again.status_code) == (200, 200)
    (stored,) = await stored_events(nats_client.jetstream(), jobs_stream_ready.name)
    assert stored.msg_id == "msg_final_1"
    assert isinstance(stored.event, JobCompleted)
    assert stored.subject == subjects.event(stored.event)
    assert stored.event.job_id == job_id
    assert stored.event.prediction_status == "succeeded"
    assert stored.event.output == "Fade in. A lighthouse."
    assert stored.event.webhook_id == "msg_final_1"
    assert stored.event.predict_time_s == 1.25


async def test_output_webhooks_send_progress_and_store_one_started(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    job_id = uuid.uuid4()
    progress = await nats_client.subscribe(subjects.progress(job_id))
    prediction_id = "pred-streaming"
    for n, chunks in enumerate((["Once"], ["Once", " upon"]), start=1):
        body = prediction("processing", chunks, job=job_id, id=prediction_id)
        response = await ingest.send(body, job=job_id, webhook_id=f"msg_output_{n}")
        assert response.status_code == 200

    received = [
        msgspec.json.decode((await progress.next_msg(timeout=5)).data, type=JobProgress)
        for _ in range(2)
    ]
    assert received == [
        JobProgress(job_id=job_id, output="Once", seq=1, prediction_id=prediction_id),
        JobProgress(job_id=job_id, output="Once upon", seq=2, prediction_id=prediction_id),
    ]
    (stored,) = await stored_events(nats_client.jetstream(), jobs_stream_ready.name)
    assert isinstance(stored.event, JobStarted)
    assert (stored.event.job_id, stored.event.prediction_id) == (job_id, prediction_id)
    assert stored.msg_id == f"started:{prediction_id}"


async def test_a_signed_webhook_replayed_against_another_job_changes_nothing_for_it(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    """The attack: a signed output, start or final webhook of one job (from a proxy log, say),
    sent again within the five minutes with `?job=` set to a victim's job."""
    job_id, victim = uuid.uuid4(), uuid.uuid4()
    victims_progress = await nats_client.subscribe(subjects.progress(victim))
    stolen = [
        (prediction("processing", ["INJECTED"], job=job_id), "msg_stolen_output"),
        (prediction("starting", job=job_id), "msg_stolen_start"),
        (prediction("succeeded", ["INJECTED"], job=job_id), "msg_stolen_final"),
    ]
    for body, webhook_id in stolen:
        replayed = await ingest.post(body, job=victim, headers=sign(body, webhook_id))
        assert replayed.status_code == 400, replayed.text
        assert replayed.json()["type"].endswith("job-mismatch")

    # The victim's own output webhook afterwards: the first (and only) progress it gets.
    own = prediction("processing", ["Mine"], job=victim, id="pred-victim")
    assert (await ingest.send(own, job=victim, webhook_id="msg_victim_output")).status_code == 200
    first = msgspec.json.decode((await victims_progress.next_msg(timeout=5)).data, type=JobProgress)
    assert first == JobProgress(job_id=victim, output="Mine", seq=1, prediction_id="pred-victim")
    events = await stored_events(nats_client.jetstream(), jobs_stream_ready.name)
    (only,) = events
    assert isinstance(only.event, JobStarted)
    assert (only.event.job_id, only.event.prediction_id) == (victim, "pred-victim")


async def test_a_signed_webhook_naming_no_job_is_parked_for_an_operator(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec, subjects: Subjects
) -> None:
    """A prediction made elsewhere in the account, its webhook pointed here: `200` (Replicate
    would retry a refusal for nothing), kept in the parked stream, logged and counted."""
    body = prediction("succeeded", ["not ours"], job=None, id="pred-elsewhere")
    first = await ingest.send_unbound(body, webhook_id="msg_elsewhere")
    again = await ingest.send_unbound(body, webhook_id="msg_elsewhere")  # Replicate's retry
    assert (first.status_code, again.status_code) == (200, 200), first.text

    js = nats_client.jetstream()
    assert await stored_events(js, jobs_stream_ready.name) == []
    parked = parked_stream(subjects, jobs_stream_ready.name).name
    state = (await js.stream_info(parked)).state
    assert state.messages == 1
    kept = await js.get_msg(parked, state.first_seq)
    assert kept.subject == subjects.parked("no_job")
    assert kept.data == body
    headers = kept.headers or {}
    assert headers[PARK_REASON_HEADER] == "no_job"
    assert "names no job" in headers[PARK_DETAIL_HEADER]
    assert headers[MSG_ID_HEADER] == "parked:webhook:msg_elsewhere"

    metrics = (await ingest.http.get(ingest.ready_url.removesuffix("/readyz") + "/metrics")).text
    assert metric(metrics, "parked") == 2
    logged = [
        json.loads(line) for line in ingest.process.log.splitlines() if "webhook parked" in line
    ]
    assert [(r["reason"], r["prediction_id"], r["level"]) for r in logged] == [
        ("no_job", "pred-elsewhere", "warning")
    ] * 2


async def test_an_aborted_prediction_completes_as_aborted(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    job_id = uuid.uuid4()
    response = await ingest.send(
        prediction("aborted", job=job_id), job=job_id, webhook_id="msg_aborted"
    )
    assert response.status_code == 200
    (stored,) = await stored_events(nats_client.jetstream(), jobs_stream_ready.name)
    assert isinstance(stored.event, JobCompleted)
    assert (stored.event.prediction_status, stored.event.output) == ("aborted", None)


async def _oversized_chunks() -> AsyncIterator[bytes]:
    # No Content-Length: only counting the bytes as they arrive can catch this body.
    for _ in range(MAX_BYTES // MIB + 1):
        yield b"{" * MIB


async def test_each_refusal_gets_its_status_and_the_service_goes_on(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    job_id = uuid.uuid4()
    body = prediction("succeeded", "text", job=job_id)
    good = sign(body, "msg_refusals")
    stale = sign(body, "msg_refusals", at=datetime.now(UTC) - timedelta(minutes=6))
    not_a_prediction = b'{"hello": "world"}'

    job = str(job_id)
    cases: list[tuple[str, bytes | AsyncIterator[bytes], dict[str, str], str | None, int]] = [
        ("oversized, unsigned", b"x" * (MAX_BYTES + 1), {}, job, 413),
        ("oversized chunked, unsigned", _oversized_chunks(), {}, job, 413),
        ("no signature headers", body, {}, job, 401),
        ("only some headers", body, {"webhook-id": "msg_refusals"}, job, 401),
        ("stale timestamp", body, stale, job, 401),
        ("unknown secret", body, sign(body, "msg_refusals", UNKNOWN_SECRET), job, 401),
        ("bad signature", body, {**good, "webhook-signature": "v1,AAAA"}, job, 401),
        ("garbage", b"\x00\xffgarbage", {**good, "webhook-signature": "garbage"}, job, 401),
        ("signed non-prediction", not_a_prediction, sign(not_a_prediction, "msg_np"), job, 400),
        ("another job", body, good, str(uuid.uuid4()), 400),
        ("invalid job", body, good, "job-42", 400),
    ]
    for name, content, headers, job_param, status in cases:
        response = await ingest.post(content, job=job_param, headers=headers)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
        problem = response.json()
        assert problem["status"] == status, name
        assert all(problem[field] for field in ("type", "title", "detail")), name

    assert await stored_events(nats_client.jetstream(), jobs_stream_ready.name) == []
    # Still alive and still working after all of that.
    assert (await ingest.http.get(ingest.ready_url)).status_code == 200
    assert (await ingest.send(body, job=job_id, webhook_id="msg_after")).status_code == 200


async def test_a_five_mib_body_is_accepted_whole(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    job_id = uuid.uuid4()
    chunks = [f"line {n:07d} of a very long script\n" for n in range(5 * MIB // 32)]
    body = prediction("succeeded", chunks, job=job_id)
    assert len(body) >= 5 * MIB

    response = await ingest.send(body, job=job_id, webhook_id="msg_big")

    assert response.status_code == 200, response.text
    (stored,) = await stored_events(nats_client.jetstream(), jobs_stream_ready.name)
    assert isinstance(stored.event, JobCompleted)
    assert stored.event.output == "".join(chunks)


async def test_a_nine_mib_result_is_stored_aside_and_named_by_the_event(
    ingest: RunningIngest, nats_client: NATS, jobs_stream_ready: StreamSpec
) -> None:
    job_id = uuid.uuid4()
    # 1 KiB chunks keep the JSON list's own overhead small: the body stays under 10 MiB.
    chunks = [f"{n:07d} ".ljust(1023, "~") + "\n" for n in range(9 * 1024)]
    body = prediction("succeeded", chunks, job=job_id, id="pred-nine-mib")
    assert 9 * MIB < len(body) <= MAX_BYTES

    first = await ingest.send(body, job=job_id, webhook_id="msg_nine")
    # Replicate's retry: the same object is overwritten, the event is a duplicate.
    again = await ingest.send(body, job=job_id, webhook_id="msg_nine")

    assert (first.status_code, again.status_code) == (200, 200), first.text
    js = nats_client.jetstream()
    (stored,) = await stored_events(js, jobs_stream_ready.name)
    assert isinstance(stored.event, JobCompleted)
    assert stored.event.output is None
    assert stored.event.output_ref == "output/pred-nine-mib"
    # What the job-store does with the reference.
    results = await result_store(js, jobs_stream_ready.name)
    assert await load_result(results, stored.event.output_ref) == "".join(chunks)


async def _trickle() -> AsyncIterator[bytes]:
    for _ in range(20):
        yield b"{"
        await asyncio.sleep(0.25)  # the behaviour under test: a client trickling its body


def metric(text: str, reason: str) -> float:
    prefix = f'webhook_ingest_webhooks_total{{reason="{reason}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].removeprefix(prefix)) if lines else 0.0


def gauge(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(f"{name} "))
    return float(line.split()[1])


def forged(at: datetime | None = None) -> dict[str, str]:
    """Every signature header, with a timestamp (now by default) but no key behind it."""
    stamp = str(int((at or datetime.now(UTC)).timestamp()))
    return {"webhook-id": "msg_forged", "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"}


@dataclass
class SlowUpload:
    """A raw HTTP/1.1 upload that declares `size` bytes, sends the first MiB and no more."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def start(
        cls, port: str, headers: Mapping[str, str], source: str, size: int = 2 * MIB
    ) -> SlowUpload:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
        lines = [
            f"POST {PATH} HTTP/1.1",
            "Host: ingest",
            "Content-Type: application/json",
            f"Content-Length: {size}",
            f"X-Forwarded-For: {source}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        # Not drained: a server that answers without reading must not block the test on it.
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + b"{" * MIB)
        return cls(reader, writer)

    async def status(self) -> int:
        """The status of the answer, given while the body is still unsent."""
        return int((await self.reader.readline()).split()[1])

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def test_slow_large_uploads_cannot_starve_a_signed_large_webhook(
    nats_url: str,
    nats_client: NATS,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
    tmp_path: Path,
) -> None:
    """Issue 18's attack: slow uploads over 1 MiB, which used to hold the large-body slots for
    the whole read timeout. Without signature headers, or with a stale timestamp, they are
    refused `401` at once; with made-up fresh headers one source holds at most its share of
    the slots; a real signed large result from another source is stored while they hang."""
    env = {
        "TRUSTED_PROXY_HOPS": "1",
        "WEBHOOK_MAX_LARGE_BODIES": "4",
        "WEBHOOK_MAX_LARGE_BODIES_PER_SOURCE": "2",
        # Longer than the test: the slots must be free for want of a signature, not of time.
        "WEBHOOK_READ_TIMEOUT_S": "120",
    }
    attacker, replicate = "198.51.100.66", "203.0.113.9"
    with ingest_process(
        nats_url, jobs_stream_ready.name, subjects, tmp_path / "starve.log", env
    ) as process:
        url, ready_url = urls(process)
        metrics_url = ready_url.removesuffix("/readyz") + "/metrics"
        process.wait_http(ready_url)
        port = process.env["HTTP_PORT"]
        uploads: list[SlowUpload] = []
        try:
            stale = forged(datetime.now(UTC) - timedelta(minutes=6))
            for headers in ({}, {"webhook-id": "msg_x"}, stale, {}, stale, {}):
                upload = await SlowUpload.start(port, headers, attacker)
                uploads.append(upload)
                assert await upload.status() == 401

            async with httpx.AsyncClient(timeout=30.0) as http:
                hanging = [await SlowUpload.start(port, forged(), attacker) for _ in range(2)]
                uploads.extend(hanging)

                async def two_held() -> bool:
                    text = (await http.get(metrics_url)).text
                    return gauge(text, "webhook_ingest_large_bodies_in_progress") == 2

                await eventually(two_held, what="the forged uploads hold their slots")
                third = await SlowUpload.start(port, forged(), attacker)
                uploads.append(third)
                assert await third.status() == 503

                job_id = uuid.uuid4()
                body = prediction("succeeded", "w" * (2 * MIB), job=job_id, id="pred-large")
                headers = {**sign(body, "msg_large"), "X-Forwarded-For": replicate}
                stored = await http.post(
                    url, params={"job": str(job_id)}, content=body, headers=headers
                )
                assert stored.status_code == 200, stored.text

                metrics = (await http.get(metrics_url)).text
                assert metric(metrics, "missing_headers") == 4
                assert metric(metrics, "timestamp_too_old") == 2
                assert metric(metrics, "too_many_large_bodies") == 1
                assert gauge(metrics, "webhook_ingest_large_bodies_in_progress") == 2
        finally:
            for upload in uploads:
                await upload.close()
        (event,) = await stored_events(nats_client.jetstream(), jobs_stream_ready.name)
        assert isinstance(event.event, JobCompleted)


async def test_abuse_is_refused_counted_and_survived(
    nats_url: str, jobs_stream_ready: StreamSpec, subjects: Subjects, tmp_path: Path
) -> None:
    env = {"WEBHOOK_RATE_PER_S": "0.2", "WEBHOOK_RATE_BURST": "4", "WEBHOOK_READ_TIMEOUT_S": "1"}
    with ingest_process(
        nats_url, jobs_stream_ready.name, subjects, tmp_path / "abuse.log", env
    ) as process:
        url, ready_url = urls(process)
        metrics_url = ready_url.removesuffix("/readyz") + "/metrics"
        process.wait_http(ready_url)
        async with httpx.AsyncClient(timeout=30.0) as http:
            # A body that trickles in, its headers made up but fresh (anybody can): `408`, or
            # the connection closed under the sender.
            try:
                slow = await http.post(url, content=_trickle(), headers=forged())
                assert slow.status_code == 408, slow.text
            except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
                pass
            answers = [(await http.post(url, content=b"{}")).status_code for _ in range(4)]
            assert answers == [401, 401, 401, 429]
            limited = await http.post(url, content=b"{}")
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.headers["content-type"] == "application/problem+json"

            metrics = (await http.get(metrics_url)).text
            assert metric(metrics, "read_timeout") == 1
            assert metric(metrics, "rate_limited") == 2
            assert metric(metrics, "missing_headers") == 3
            assert (await http.get(ready_url)).status_code == 200
        refusals = [line for line in process.log.splitlines() if "webhook refused" in line]
        assert len(refusals) == 6
        assert all(json.loads(line)["reason"] for line in refusals)


async def test_nats_down_answers_503_and_the_retry_stores_once(
    restartable_nats: NatsServer, tmp_path: Path
) -> None:
    subjects = Subjects("down.")
    stream = jobs_stream(subjects, name="JOBS_DOWN")
    job_id = uuid.uuid4()
    body = prediction("succeeded", ["kept"], job=job_id)
    # Over the inline limit: its output needs the result store, which is down as well.
    large = prediction(
        "succeeded", ["x" * 1023 + "\n"] * (9 * 1024), job=job_id, id="pred-large-down"
    )

    with ingest_process(restartable_nats.url, stream.name, subjects, tmp_path / "i.log") as proc:
        url, ready_url = urls(proc)
        proc.wait_http(ready_url)
        async with httpx.AsyncClient(timeout=30.0) as http:
            restartable_nats.stop()
            proc.wait_http(ready_url, status=503)

            refused = await http.post(
                url, params={"job": str(job_id)}, content=body, headers=sign(body, "msg_down")
            )
            assert refused.status_code == 503, refused.text
            assert int(refused.headers["retry-after"]) > 0
            assert refused.headers["content-type"] == "application/problem+json"
            large_refused = await http.post(
                url, params={"job": str(job_id)}, content=large, headers=sign(large, "msg_large")
            )
            assert large_refused.status_code == 503, large_refused.text

            restartable_nats.start()
            proc.wait_http(ready_url)
            retried = await http.post(
                url, params={"job": str(job_id)}, content=body, headers=sign(body, "msg_down")
            )
            assert retried.status_code == 200, retried.text
            large_retried = await http.post(
                url, params={"job": str(job_id)}, content=large, headers=sign(large, "msg_large")
            )
            assert large_retried.status_code == 200, large_retried.text

        nc = await nats.connect(restartable_nats.url)
        try:
            # The 503 stored nothing, and the `200` came only once the retry was stored.
            stored, stored_large = await stored_events(nc.jetstream(), stream.name)
            assert stored.msg_id == "msg_down"
            assert isinstance(stored.event, JobCompleted)
            assert stored.event.output == "kept"
            assert stored_large.msg_id == "msg_large"
            assert isinstance(stored_large.event, JobCompleted)
            assert stored_large.event.output_ref is not None
            results = await result_store(nc.jetstream(), stream.name)
            assert len(await load_result(results, stored_large.event.output_ref)) == 9 * MIB
        finally:
            await nc.close()
