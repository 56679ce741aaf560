"""The job-store client against a real NATS micro service answering as the job-store does:
replies decoded, `4xx` errors `Refused`, everything else that is not an answer `Unavailable`."""

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats import micro
from nats.aio.client import Client as NATS
from nats.micro.request import Request

from jobs_runtime.errors import Unavailable
from jobs_runtime.jobstore import JobStoreClient, Refused


class Question(msgspec.Struct, frozen=True):
    answer: str


class Answer(msgspec.Struct, frozen=True):
    text: str


SUBJECT = "test.jobstore.client"


@pytest.fixture
async def responder(nats_client: NATS) -> AsyncIterator[None]:
    """Answers `Question.answer`: `ok`, an error code, `garbage` or `silence`."""

    async def handle(request: Request) -> None:
        question = msgspec.json.decode(request.data, type=Question)
        match question.answer:
            case "ok":
                await request.respond(msgspec.json.encode(Answer("tides")))
            case "garbage":
                await request.respond(b"[1, 2]")
            case "silence":
                return
            case code:
                await request.respond_error(code, f"refused with {code}")

    service = await micro.add_service(nats_client, name="jobstore-client-test", version="0.0.1")
    await service.add_endpoint(name="ask", subject=SUBJECT, handler=handle)
    yield
    await service.stop()


async def test_an_answer_is_decoded(nats_client: NATS, responder: None) -> None:
    client = JobStoreClient(nats_client)
    assert await client.ask(SUBJECT, Question("ok"), Answer) == Answer("tides")


@pytest.mark.parametrize("code", ["400", "404", "422"])
async def test_a_4xx_error_is_refused_with_its_code(
    nats_client: NATS, responder: None, code: str
) -> None:
    with pytest.raises(Refused) as refused:
        await JobStoreClient(nats_client).ask(SUBJECT, Question(code), Answer)
    assert (refused.value.code, refused.value.description) == (code, f"refused with {code}")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("503", "answered 503"),
        ("garbage", "something else than a Answer"),
        ("silence", "did not answer"),
    ],
)
async def test_anything_else_is_unavailable(
    nats_client: NATS, responder: None, answer: str, reason: str
) -> None:
    with pytest.raises(Unavailable, match=reason):
        await JobStoreClient(nats_client, timeout_s=0.3).ask(SUBJECT, Question(answer), Answer)


async def test_no_responder_and_no_connection_are_unavailable(nats_url: str) -> None:
    nc = NATS()
    await nc.connect(nats_url)
    client = JobStoreClient(nc, timeout_s=0.5)
    with pytest.raises(Unavailable, match="did not answer"):
        await client.ask("test.jobstore.nobody", Question("ok"), Answer)
    await nc.close()
    with pytest.raises(Unavailable, match="not connected"):
        await asyncio.wait_for(client.ask(SUBJECT, Question("ok"), Answer), 1)
