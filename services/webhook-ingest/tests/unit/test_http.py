"""The endpoint's answers over fake ports: status per check in the contract's order, problem bodies,
`Retry-After` on 503, and logs that carry neither secrets nor bodies."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from jobs_proto.events import JobCompleted, JobEvent
from jobs_proto.stream import MAX_EVENT_BYTES
from webhook_ingest.adapters.http import PATH, webhook_app
from webhook_ingest.verify import WebhookVerifier, parse_secrets

from ..fakes import (
    CountingObserver,
    FakeEvents,
    FakeOutput,
    FakeParking,
    FakeProgress,
    FakeResults,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
LIMIT = 64 * 1024
JOB_ID = uuid.uuid4()


@pytest.fixture
def parking() -> FakeParking:
    return FakeParking()


@pytest.fixture
def events() -> FakeEvents:
    return FakeEvents()


@pytest.fixture
async def client(events: FakeEvents, parking: FakeParking) -> AsyncIterator[httpx.AsyncClient]:
    app = webhook_app(
        verifier=WebhookVerifier(parse_secrets(SECRET), clock=lambda: NOW),
        events=events,
        progress=FakeProgress(),
        results=FakeResults(),
        parking=parking,
        max_bytes=LIMIT,
        clock=lambda: NOW,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        yield http


def signed(body: bytes, webhook_id: str = "msg_1", at: datetime = NOW) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(webhook_id, at, body.decode()),
    }


def prediction(**fields: object) -> bytes:
    """A prediction of the job `JOB_ID`, its webhook URL echoed as Replicate does."""
    webhook = f"https://hooks.example{PATH}?job={JOB_ID}"
    return json.dumps({"id": "p1", "status": "succeeded", "webhook": webhook, **fields}).encode()


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    return dict(body)


async def test_a_signed_completion_is_stored(client: httpx.AsyncClient, events: FakeEvents) -> None:
    body = prediction(output=["a", "b"])
    response = await client.post(
        PATH, params={"job": str(JOB_ID)}, content=body, headers=signed(body)
    )
    assert response.status_code == 200
    (event,) = events.stored
    assert isinstance(event, JobCompleted)
    assert (event.job_id, event.output, event.webhook_id) == (JOB_ID, "ab", "msg_1")


async def test_size_comes_first_even_unsigned(client: httpx.AsyncClient) -> None:
    response = await client.post(PATH, content=b"x" * (LIMIT + 1))
    assert_problem(response, 413)


async def test_a_chunked_body_is_counted(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // 1024 + 1):
            yield b"y" * 1024

    response = await client.post(PATH, content=chunks())
    assert_problem(response, 413)


async def test_a_body_at_the_limit_is_read(client: httpx.AsyncClient) -> None:
    body = prediction(output="z" * (LIMIT - len(prediction(output=""))))
    assert len(body) == LIMIT
    response = await client.post(
        PATH, params={"job": str(JOB_ID)}, content=body, headers=signed(body)
    )
    assert response.status_code == 200


async def test_refusals_in_order_with_distinct_details(client: httpx.AsyncClient) -> None:
    body = prediction()
    stale = signed(body, at=NOW.replace(hour=4))
    cases = {
        "missing": ({}, 401),
        "stale": (stale, 401),
        "future": (signed(body, at=NOW.replace(hour=6)), 401),
        "bad signature": ({**signed(body), "webhook-signature": "v1,AAAA"}, 401),
        "stale and unsigned": ({**stale, "webhook-signature": "nonsense"}, 401),
    }
    details = {}
    for name, (headers, status) in cases.items():
        response = await client.post(
            PATH, params={"job": str(JOB_ID)}, content=body, headers=headers
        )
        details[name] = assert_problem(response, status)["detail"]
    assert details["stale"] == details["stale and unsigned"]
    assert len({details[n] for n in ("missing", "stale", "future", "bad signature")}) == 4


async def test_signed_but_unusable_is_400(client: httpx.AsyncClient, events: FakeEvents) -> None:
    not_prediction = b'{"hello": "world"}'
    response = await client.post(
        PATH, params={"job": str(JOB_ID)}, content=not_prediction, headers=signed(not_prediction)
    )
    assert_problem(response, 400)
    for params, kind in (
        ({"job": "nope"}, "bad-job-id"),
        ({"job": str(uuid.uuid4())}, "job-mismatch"),
    ):
        response = await client.post(
            PATH, params=params, content=prediction(), headers=signed(prediction())
        )
        assert str(assert_problem(response, 400)["type"]).endswith(kind)
    assert events.stored == []


async def test_a_signed_webhook_naming_no_job_is_parked_with_200(
    client: httpx.AsyncClient,
    events: FakeEvents,
    parking: FakeParking,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = prediction(webhook="https://elsewhere.example/hook")
    caplog.set_level(logging.INFO)
    response = await client.post(PATH, content=body, headers=signed(body, "msg_elsewhere"))
    assert response.status_code == 200, response.text
    assert [(id_, kept[1]) for id_, kept in parking.parked.items()] == [("msg_elsewhere", "no_job")]
    assert events.stored == []
    (record,) = [r for r in caplog.records if r.name.startswith("webhook_ingest")]
    assert (record.getMessage(), record.levelname) == ("webhook parked", "WARNING")
    assert (record.__dict__["reason"], record.__dict__["prediction_id"]) == ("no_job", "p1")


async def test_bus_down_is_503_with_retry_after(
    client: httpx.AsyncClient, events: FakeEvents
) -> None:
    events.down = True
    response = await client.post(
        PATH, params={"job": str(JOB_ID)}, content=prediction(), headers=signed(prediction())
    )
    assert_problem(response, 503)
    assert int(response.headers["retry-after"]) > 0


async def test_a_large_result_is_stored_aside_or_answered_503(events: FakeEvents) -> None:
    results = FakeResults()
    app = webhook_app(
        verifier=WebhookVerifier(parse_secrets(SECRET), clock=lambda: NOW),
        events=events,
        progress=FakeProgress(),
        results=results,
        parking=FakeParking(),
        max_bytes=MAX_EVENT_BYTES + 1024 * 1024,
    )
    body = prediction(output="w" * MAX_EVENT_BYTES)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://i"
    ) as http:

        async def send() -> httpx.Response:
            return await http.post(
                PATH, params={"job": str(JOB_ID)}, content=body, headers=signed(body)
            )

        results.down = True
        refused = await send()
        assert_problem(refused, 503)
        assert int(refused.headers["retry-after"]) > 0
        assert events.stored == []

        results.down = False
        assert (await send()).status_code == 200
    (event,) = events.stored
    assert isinstance(event, JobCompleted)
    assert (event.output, event.output_ref) == (None, "output/p1")
    assert results.objects == {"output/p1": "w" * MAX_EVENT_BYTES}


async def test_logs_name_the_refusal_but_no_secret_or_body(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = prediction(output="TOP-SECRET-SCRIPT")
    caplog.set_level(logging.INFO)
    await client.post(
        PATH,
        params={"job": str(JOB_ID)},
        content=body,
        headers={**signed(body), "webhook-signature": "v1,AAAA"},
    )
    await client.post(PATH, params={"job": str(JOB_ID)}, content=body, headers=signed(body))
    records = [r for r in caplog.records if r.name.startswith("webhook_ingest")]
    assert [r.getMessage() for r in records] == ["webhook refused", "webhook stored"]
    assert records[0].__dict__["reason"] == "bad_signature"
    text = caplog.text + "".join(str(r.__dict__) for r in records)
    assert "TOP-SECRET-SCRIPT" not in text
    assert SECRET.removeprefix("whsec_") not in text


async def test_other_paths_and_methods_answer_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get(PATH), 405)
    assert_problem(await client.post("/api/webhooks/elsewhere"), 404)


async def test_a_bug_answers_a_500_problem_without_internals() -> None:
    class Broken(FakeEvents):
        async def store(self, event: JobEvent) -> bool:
            raise RuntimeError("internal detail")

    app = webhook_app(
        verifier=WebhookVerifier(parse_secrets(SECRET), clock=lambda: NOW),
        events=Broken(),
        progress=FakeProgress(),
        results=FakeResults(),
        parking=FakeParking(),
        max_bytes=LIMIT,
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://i") as http:
        response = await http.post(
            PATH, params={"job": str(JOB_ID)}, content=prediction(), headers=signed(prediction())
        )
    assert "internal detail" not in str(assert_problem(response, 500)["detail"])


async def test_a_webhook_that_stores_nothing_new_is_logged_at_debug_only(
    events: FakeEvents, parking: FakeParking, caplog: pytest.LogCaptureFixture
) -> None:
    app = webhook_app(
        verifier=WebhookVerifier(parse_secrets(SECRET), clock=lambda: NOW),
        # The second `started` of the prediction is a duplicate (the same message id).
        events=FakeEvents(),
        progress=FakeProgress(),
        results=FakeResults(),
        parking=parking,
        max_bytes=LIMIT,
    )
    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://i") as http:
        for n in (1, 2):
            body = prediction(status="processing", output=["Once"] * n)
            answer = await http.post(PATH, content=body, headers=signed(body, f"msg_{n}"))
            assert answer.status_code == 200
    stored = [r for r in caplog.records if r.getMessage() == "webhook stored"]
    assert [(r.levelno, r.__dict__["duplicate"]) for r in stored] == [
        (logging.INFO, False),
        (logging.DEBUG, True),
    ]


async def test_an_output_webhook_whose_text_the_log_refuses_is_answered_200_and_counted(
    events: FakeEvents, parking: FakeParking, caplog: pytest.LogCaptureFixture
) -> None:
    observer = CountingObserver()
    app = webhook_app(
        verifier=WebhookVerifier(parse_secrets(SECRET), clock=lambda: NOW),
        events=events,
        progress=FakeProgress(),
        results=FakeResults(),
        parking=parking,
        max_bytes=LIMIT,
        clock=lambda: NOW,
        observer=observer,
        output=FakeOutput(down=True),
    )
    body = prediction(status="processing", output=["Once"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingest"
    ) as http:
        response = await http.post(f"{PATH}?job={JOB_ID}", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    assert observer.webhooks == {"stored": 1, "output_not_offered": 1}
    assert "its output not offered to the log" in caplog.text
