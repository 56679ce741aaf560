"""webhook-ingest's output fallback as a process over real NATS: an `output` webhook's text
(a list of strings joined, or a string) lands in the prediction's output log once, whether the
webhook comes twice, the log already holds more (the relay got there first) or less; a final
webhook offers nothing, and a prediction id that is no subject token is skipped with a `200`."""

import uuid

from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from jobs_proto.output import OutputChunk, decode_chunk
from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_runtime.output import OutputLog

from .test_webhook_ingest_service import RunningIngest, prediction
from .test_webhook_ingest_service import ingest as ingest


async def logged(nats_client: NATS, stream: str, subject: str) -> list[OutputChunk]:
    """Every chunk of one prediction's log, oldest first."""
    js = nats_client.jetstream()
    chunks: list[OutputChunk] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, direct=True, next=True)
        except NotFoundError:
            return chunks
        chunks.append(decode_chunk(msg.data or b""))
        assert msg.seq is not None
        seq = msg.seq + 1


async def test_output_webhooks_land_in_the_log_once(
    ingest: RunningIngest, nats_client: NATS, subjects: Subjects, jobs_stream_ready: StreamSpec
) -> None:
    stream = f"{jobs_stream_ready.name}_OUTPUT"
    job, pred = uuid.uuid4(), f"pred{uuid.uuid4().hex[:10]}"
    subject = subjects.output(job, pred)

    async def send(body: bytes, webhook_id: str) -> None:
        answered = await ingest.send(body, job=job, webhook_id=webhook_id)
        assert answered.status_code == 200, answered.text

    first = prediction("processing", ["Once ", "upon"], job=job, id=pred)
    await send(first, "msg_1")
    await send(first, "msg_1")  # Replicate's retry
    await send(prediction("processing", "Once upon", job=job, id=pred), "msg_2")
    assert await logged(nats_client, stream, subject) == [OutputChunk(offset=0, text="Once upon")]

    # The relay wrote past what the next webhook knows: nothing is appended.
    log = OutputLog(nats_client.jetstream(), stream, subjects)
    await log.offer(job, pred, 9, " a tïme, there")
    await send(prediction("processing", ["Once ", "upon", " a"], job=job, id=pred), "msg_3")
    # A webhook with more than the log holds appends only the rest.
    await send(prediction("processing", ["Once upon a tïme, there was"], job=job, id=pred), "msg_4")
    # The final webhook's output reaches `/output` from the job-store, not from the log.
    await send(
        prediction("succeeded", "Once upon a tïme, there was a model.", job=job, id=pred), "msg_5"
    )
    chunks = await logged(nats_client, stream, subject)
    assert [(c.offset, c.text) for c in chunks] == [
        (0, "Once upon"),
        (9, " a tïme, there"),
        (23, " was"),
    ]

    # No subject token: answered, nothing logged (and no error in the log, which the
    # fixture checks when the process stops).
    await send(prediction("processing", ["text"], job=job, id="pred.with.dots"), "msg_6")
    info = await nats_client.jetstream().stream_info(stream)
    assert info.state.messages == len(chunks)
    assert "the prediction id is not one subject token" in ingest.process.log
