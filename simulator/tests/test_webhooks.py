"""Webhooks as Replicate sends them: signed per Standard Webhooks, the whole prediction as the
body, only the events asked for, the URL untouched, the final one retried with backoff,
redirects not followed and a bounded number of connections."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import pytest
from replicate.webhook import Webhooks, WebhookSigningSecret, WebhookValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.responses import Response

from jobs_testkit.receiver import Received, Receiver, running_receiver
from jobs_testkit.waiting import eventually
from replicate_sim.config import Settings

from .calls import audit, create, final, get, hook, new_job, parsed, quiet, until_succeeded
from .conftest import SECRET, RunningSimulator, VirtualTime, replicate_client, settings

# Helpers -------------------------------------------------------------------------------------


def of_job(receiver: Receiver, job: str) -> list[Received]:
    return [r for r in receiver.received if r.query == f"job={job}"]


def verify_both_ways(received: Received, secret: str) -> dict[str, Any]:
    """The Standard Webhooks reference library and the `replicate` package's validator both
    accept the webhook; answers the body the reference library parsed."""
    body = Webhook(secret).verify(received.body, received.headers)
    Webhooks.validate(
        headers=received.headers,
        body=received.body.decode(),
        secret=WebhookSigningSecret(key=secret),
        tolerance=300,
    )
    assert isinstance(body, dict)
    return body


# Signatures ----------------------------------------------------------------------------------


async def test_every_webhook_is_signed_with_the_accounts_secret(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=1.2)
    job = new_job()
    async with replicate_client(simulator.url) as client:
        secret = await client.webhooks.default.async_secret()
        assert secret.key == SECRET
        prediction = await client.predictions.async_create(
            model="google/gemini-3-pro", input={"prompt": "signed"}, webhook=hook(receiver, job)
        )

    await until_succeeded(receiver)
    got = list(receiver.received)
    assert len(got) >= 3  # start, at least one output, completed
    for received in got:
        assert received.headers["webhook-id"].startswith("msg_")
        assert abs(int(received.headers["webhook-timestamp"]) - received.at) < 5
        assert received.headers["webhook-signature"].startswith("v1,")
        assert received.headers["content-type"] == "application/json"
        body = verify_both_ways(received, secret.key)
        assert body == parsed(received)
        assert body["id"] == prediction.id
    assert len({r.headers["webhook-id"] for r in got}) == len(got)

    (last,) = [r for r in got if parsed(r)["status"] == "succeeded"]
    tampered = last.body.replace(b'"succeeded"', b'"failed"')
    assert tampered != last.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret.key).verify(tampered, last.headers)
    with pytest.raises(WebhookValidationError):
        Webhooks.validate(
            headers=last.headers, body=tampered.decode(), secret=WebhookSigningSecret(key=SECRET)
        )
    other_secret = "whsec_" + "b3RoZXItc2VjcmV0LW9mLXRoZS1zYW1lLWxlbmd0aA=="
    with pytest.raises(WebhookVerificationError):
        Webhook(other_secret).verify(last.body, last.headers)
    with pytest.raises(WebhookValidationError):
        Webhooks.validate(
            headers=last.headers,
            body=last.body.decode(),
            secret=WebhookSigningSecret(key=other_secret),
        )


# Bodies and events -----------------------------------------------------------------------------


async def test_the_body_is_the_whole_prediction(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=1.0)
    job = new_job()
    created = await create(
        simulator, hook(receiver, job), ["start", "completed"], prompt="the tides of the harbour"
    )
    start_hook, completed_hook = await receiver.wait_for(2)
    verify_both_ways(start_hook, SECRET)
    verify_both_ways(completed_hook, SECRET)

    start = parsed(start_hook)
    assert start["id"] == created["id"]
    assert start["status"] == "processing"
    assert start["input"] == {"prompt": "the tides of the harbour"}
    assert start["model"] == "google/gemini-3-pro"
    assert start["urls"] == created["urls"]
    assert start["urls"]["get"] == f"{simulator.url}/v1/predictions/{created['id']}"
    assert start["created_at"] == created["created_at"]
    assert start["started_at"] >= start["created_at"]
    assert "completed_at" not in start  # left out until it happens
    assert start["error"] is None

    completed = parsed(completed_hook)
    shown = await get(simulator, created["id"])
    # The final webhook is exactly the prediction as the API shows it once it has ended.
    assert completed == shown
    assert completed["status"] == "succeeded"
    assert isinstance(completed["output"], list)
    assert len(completed["output"]) > 1
    assert "".join(completed["output"]).startswith("Simulated answer to: the tides")
    assert completed["completed_at"] >= completed["started_at"]
    assert completed["metrics"]["predict_time"] > 0


async def test_only_the_events_in_the_filter_are_sent(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=1.5)
    cases: dict[str, tuple[list[str] | None, set[str]]] = {
        "start": (["start"], {"start"}),
        "completed": (["completed"], {"completed"}),
        "output": (["output"], {"output"}),
        "logs+completed": (["logs", "completed"], {"logs", "completed"}),
        "start+completed": (["start", "completed"], {"start", "completed"}),
        # No filter: every event; each 500 ms tick sends one webhook, `output` when the
        # output grew (it carries the logs too).
        "none": (None, {"start", "output", "completed"}),
    }
    jobs = {name: new_job() for name in cases}
    created = {
        name: await create(simulator, hook(receiver, jobs[name]), events)
        for name, (events, _) in cases.items()
    }
    for prediction in created.values():
        assert (await final(simulator, prediction["id"]))["status"] == "succeeded"
    await quiet(simulator)

    status_of = {"start": "processing", "output": "processing", "logs": "processing"}
    status_of["completed"] = "succeeded"
    for name, (_, expected) in cases.items():
        (record,) = await audit(simulator, jobs[name])
        deliveries = record["deliveries"]
        assert {d["event"] for d in deliveries} == expected, name
        assert all(d["status"] == 200 and d["attempt"] == 1 for d in deliveries), name
        got = of_job(receiver, jobs[name])
        assert [r.headers["webhook-id"] for r in got] == [d["webhook_id"] for d in deliveries]
        for received, delivery in zip(got, deliveries, strict=True):
            body = parsed(received)
            assert body["id"] == created[name]["id"]
            assert body["status"] == status_of[delivery["event"]], (name, delivery)
        if "completed" not in expected:
            assert all(parsed(r)["status"] == "processing" for r in got), name


async def test_output_webhooks_come_at_most_every_500ms_with_the_output_so_far(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    # Slow enough that the text (about 125 tokens) is still being written at the end.
    await simulator.configure(latencyS=3.0, tokensPerS=30)
    job = new_job()
    created = await create(simulator, hook(receiver, job), ["output", "completed"])

    await until_succeeded(receiver)
    got = list(receiver.received)
    outputs = [r for r in got if parsed(r)["status"] == "processing"]
    (last,) = [r for r in got if parsed(r)["status"] == "succeeded"]
    assert got[-1] is last
    assert len(outputs) >= 3
    gaps = [b.at - a.at for a, b in pairwise(outputs)]
    assert min(gaps) >= 0.45, gaps

    final_text = "".join(parsed(last)["output"])
    assert final_text == "".join((await get(simulator, created["id"]))["output"])
    texts = ["".join(parsed(r)["output"]) for r in outputs]
    for shorter, longer in pairwise(texts):
        assert len(shorter) < len(longer)
    for text in texts:
        assert text
        assert final_text.startswith(text)
    assert len(texts[-1]) < len(final_text)


async def test_the_webhook_url_arrives_untouched(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0)
    query = "job=abc-123&x=a%2Fb&y=1"
    created = await create(simulator, f"{receiver.url}?{query}", ["completed"])
    (received,) = await receiver.wait_for(1)
    assert received.path == "/hook"
    assert received.query == query
    (record,) = await audit(simulator, "abc-123")
    assert record["id"] == created["id"]


# Retries and redirects -------------------------------------------------------------------------


async def retried_after(
    simulator: RunningSimulator, virtual_time: VirtualTime, receiver: Receiver
) -> float:
    """Wait for a failed final webhook's retry to be set; check nothing is resent while time
    stands still, then move time to the retry and wait for it to arrive. Answers the delay."""
    sender = simulator.sim.sender
    delivered = len(receiver.received)
    await eventually(lambda: sender.pending_retries == 1, what="a retry is set")
    delay = virtual_time.delays[-1]
    assert (sender.queued, sender.in_flight, len(receiver.received)) == (0, 0, delivered)
    virtual_time.advance(delay)
    await receiver.wait_for(delivered + 1)
    return delay


async def test_the_final_webhook_is_retried_with_backoff_and_no_other(
    simulator_in_virtual_time: RunningSimulator, virtual_time: VirtualTime, receiver: Receiver
) -> None:
    simulator = simulator_in_virtual_time
    await simulator.configure(latencyS=0.3)
    failures_left = 2

    def answer(received: Received) -> Response:
        nonlocal failures_left
        if parsed(received)["status"] == "processing":
            return Response(status_code=500)
        if failures_left:
            failures_left -= 1
            return Response(status_code=500)
        return Response(status_code=200)

    receiver.answer = answer
    job = new_job()
    created = await create(simulator, hook(receiver, job), ["start", "completed"])
    virtual_time.advance(0.3)  # started and ended
    await receiver.wait_for(2)
    # Each retry waits its delay of the schedule (0.1, 0.2, 0.4 s here), in turn.
    assert [await retried_after(simulator, virtual_time, receiver) for _ in range(2)] == [0.1, 0.2]
    await quiet(simulator)  # answered 200: no retry is set
    virtual_time.advance(60)
    await quiet(simulator)

    got = of_job(receiver, job)
    assert [parsed(r)["status"] for r in got] == ["processing"] + ["succeeded"] * 3
    start, *attempts = got
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    assert start.headers["webhook-id"] != attempts[0].headers["webhook-id"]
    assert all(r.body == attempts[0].body for r in attempts)
    for received in attempts:
        verify_both_ways(received, SECRET)

    (record,) = await audit(simulator, job)
    assert record["id"] == created["id"]
    assert [(d["event"], d["attempt"], d["status"]) for d in record["deliveries"]] == [
        ("start", 1, 500),
        ("completed", 1, 500),
        ("completed", 2, 500),
        ("completed", 3, 200),
    ]
    assert [d["webhook_id"] for d in record["deliveries"]] == [r.headers["webhook-id"] for r in got]


async def test_a_final_webhook_never_answered_2xx_stops_after_the_schedule(
    simulator_in_virtual_time: RunningSimulator, virtual_time: VirtualTime, receiver: Receiver
) -> None:
    simulator = simulator_in_virtual_time
    await simulator.configure(latencyS=0)
    receiver.answer = lambda _: Response(status_code=503)
    job = new_job()
    await create(simulator, hook(receiver, job), ["completed"])
    virtual_time.advance(0)  # the prediction's end is due at once
    await receiver.wait_for(1)
    # One more attempt per delay of the schedule (0.1, 0.2, 0.4 s here), each after its delay.
    delays = [await retried_after(simulator, virtual_time, receiver) for _ in range(3)]
    assert delays == [0.1, 0.2, 0.4]
    await quiet(simulator)  # the schedule is spent: no retry is set after the fourth failure
    virtual_time.advance(3600)
    await quiet(simulator)
    assert len(of_job(receiver, job)) == 4
    (record,) = await audit(simulator, job)
    assert [(d["attempt"], d["status"]) for d in record["deliveries"]] == [
        (1, 503),
        (2, 503),
        (3, 503),
        (4, 503),
    ]


async def test_redirects_are_not_followed(simulator: RunningSimulator, receiver: Receiver) -> None:
    await simulator.configure(latencyS=0)
    job = new_job()
    async with running_receiver("/elsewhere") as elsewhere:
        redirected = False

        def answer(received: Received) -> Response:
            nonlocal redirected
            if redirected:
                return Response(status_code=200)
            redirected = True
            return Response(status_code=307, headers={"location": hook(elsewhere, job)})

        receiver.answer = answer
        await create(simulator, hook(receiver, job), ["completed"])
        await receiver.wait_for(2)
        await quiet(simulator)
        assert elsewhere.received == []

    got = of_job(receiver, job)
    assert len(got) == 2
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
    (record,) = await audit(simulator, job)
    assert [(d["attempt"], d["status"]) for d in record["deliveries"]] == [(1, 307), (2, 200)]


# Connections and the schedule ------------------------------------------------------------------


@pytest.mark.parametrize("sim_settings", [settings(SIM_WEBHOOK_CONCURRENCY=4)], ids=["4"])
async def test_webhook_connections_are_bounded(
    simulator: RunningSimulator, receiver: Receiver, sim_settings: Settings
) -> None:
    assert sim_settings.sim_webhook_concurrency == 4
    await simulator.configure(latencyS=0)
    receiver.delay_s = 0.2
    jobs = [new_job() for _ in range(40)]
    await asyncio.gather(*(create(simulator, hook(receiver, job), ["completed"]) for job in jobs))
    await receiver.wait_for(40, within=20)
    await quiet(simulator)
    assert sorted(r.query for r in receiver.received) == sorted(f"job={job}" for job in jobs)
    # Forty webhooks due at once, never more than four on the wire, and four at a time.
    assert receiver.most_open_requests == 4


def test_the_default_retry_schedule_spans_about_a_minute() -> None:
    delays = Settings().retry_delays
    assert 55 <= sum(delays) <= 65
    assert len(delays) >= 3
    assert list(delays) == sorted(delays)
    assert delays[0] > 0
