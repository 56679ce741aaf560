"""Each `/_sim/config` knob does what the contract's table says, measured from outside."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import httpx

from jobs_testkit.receiver import Received, Receiver
from jobs_testkit.waiting import eventually

from .calls import (
    audit,
    config,
    create,
    create_many,
    finals,
    get,
    hook,
    new_job,
    parsed,
    post_create,
    quiet,
    read_until,
    until_succeeded,
    when,
)
from .conftest import RunningSimulator, VirtualTime

DEFAULTS: dict[str, object] = {
    "latencyS": 2,
    "predictionFailRate": 0,
    "abortRate": 0,
    "apiErrorRate": 0,
    "apiErrorAfterCreate": False,
    "createRateLimitPerMinute": None,
    "dropWebhookRate": 0,
    "duplicateWebhookRate": 0,
    "reorderWebhooks": False,
    "holdWebhooks": False,
    "tokensPerS": 50,
    "streamDropRate": 0,
    "dataRemovedAfterS": 3600,
}
THROTTLED = re.compile(r"^Request was throttled\. Your rate limit resets in ~(\d+)s\.$")


# Helpers -------------------------------------------------------------------------------------


def job_of(received: Received) -> str:
    assert received.query.startswith("job=")
    return received.query.removeprefix("job=")


# The config object ---------------------------------------------------------------------------


async def test_the_config_has_the_contracts_fields_and_defaults(
    simulator: RunningSimulator,
) -> None:
    knobs = await config(simulator)
    assert knobs == DEFAULTS
    assert list(knobs) == list(DEFAULTS)


async def test_put_merges_the_fields_given_and_answers_the_whole_object(
    simulator: RunningSimulator,
) -> None:
    first = await simulator.configure(latencyS=0.5, reorderWebhooks=True)
    assert first == {**DEFAULTS, "latencyS": 0.5, "reorderWebhooks": True}
    second = await simulator.configure(abortRate=0.25, createRateLimitPerMinute=7)
    assert second == {
        **DEFAULTS,
        "latencyS": 0.5,
        "reorderWebhooks": True,
        "abortRate": 0.25,
        "createRateLimitPerMinute": 7,
    }
    third = await simulator.configure(createRateLimitPerMinute=None, reorderWebhooks=False)
    assert third == {**DEFAULTS, "latencyS": 0.5, "abortRate": 0.25}
    assert await config(simulator) == third
    assert await simulator.configure() == third


BAD_BODIES = {
    "unknown field": b'{"latencyS": 1, "noSuchKnob": 1}',
    "snake case": b'{"latency_s": 1}',
    "rate above 1": b'{"predictionFailRate": 1.5}',
    "negative rate beside a good field": b'{"latencyS": 1, "abortRate": -0.1}',
    "negative latency": b'{"latencyS": -1}',
    "number as a string": b'{"latencyS": "1"}',
    "rate as a word": b'{"apiErrorRate": "often"}',
    "int for a bool": b'{"reorderWebhooks": 1}',
    "negative limit": b'{"createRateLimitPerMinute": -1}',
    "negative removal delay": b'{"dataRemovedAfterS": -1}',
    "fractional limit": b'{"createRateLimitPerMinute": 2.5}',
    "no tokens a second": b'{"tokensPerS": 0}',
    "negative tokens a second": b'{"tokensPerS": -5}',
    "tokens a second as a string": b'{"tokensPerS": "fast"}',
    "drop rate above 1": b'{"streamDropRate": 1.01}',
    "negative drop rate": b'{"streamDropRate": -0.5}',
    "not an object": b'[{"latencyS": 1}]',
    "not JSON": b'{"latencyS": 1',
}


async def test_an_unknown_field_or_a_bad_value_is_422_and_changes_nothing(
    simulator: RunningSimulator,
) -> None:
    before = await simulator.configure(latencyS=0.7, holdWebhooks=True)
    for name, body in BAD_BODIES.items():
        response = await simulator.http.put(
            "/_sim/config", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (name, response.text)
        assert isinstance(response.json()["detail"], str), name
        assert await config(simulator) == before, name


async def test_reset_restores_the_defaults_and_keeps_the_predictions(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.2, abortRate=1, createRateLimitPerMinute=1)
    job = new_job()
    created = await create(simulator, hook(receiver, job), ["completed"])
    response = await simulator.http.post("/_sim/reset")
    assert response.status_code == 200
    assert response.json() == DEFAULTS
    assert await config(simulator) == DEFAULTS

    (shown,) = await finals(simulator, [created["id"]])
    assert shown["status"] == "aborted"  # planned under the knobs of its creation
    (record,) = await audit(simulator, job)
    assert record["id"] == created["id"]
    assert record["status"] == "aborted"
    # The rate limit went with the reset: creating again is allowed.
    await create(simulator)


# Knobs of the predictions --------------------------------------------------------------------


async def test_latency_is_the_time_from_creation_to_the_final_state(
    simulator_in_virtual_time: RunningSimulator, virtual_time: VirtualTime
) -> None:
    simulator = simulator_in_virtual_time
    await simulator.configure(latencyS=1.0)
    created = await create(simulator)
    assert created["status"] == "starting"
    virtual_time.advance(0.5)
    midway = await get(simulator, created["id"])
    assert midway["status"] == "processing"
    assert "completed_at" not in midway  # left out until it happens

    prediction = simulator.sim.get(created["id"])
    assert prediction is not None
    virtual_time.advance(0.375)  # before the latency is up: not ended, by clock or by timer
    assert not prediction.finished
    assert (await get(simulator, created["id"]))["status"] == "processing"

    virtual_time.advance(0.125)  # the latency is up: the finishing timer has run
    assert prediction.finished
    shown = await get(simulator, created["id"])
    assert shown["status"] == "succeeded"
    assert (when(shown["completed_at"]) - when(shown["created_at"])).total_seconds() == 1.0
    assert shown["metrics"]["total_time"] == 1.0


async def test_prediction_fail_rate_is_the_share_that_fails(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0, predictionFailRate=0.5)
    created = await create_many(simulator, [None] * 200)
    shown = await finals(simulator, [p["id"] for p in created])
    counts = Counter(p["status"] for p in shown)
    assert set(counts) == {"failed", "succeeded"}, counts
    assert 70 <= counts["failed"] <= 130, counts
    for prediction in shown:
        if prediction["status"] == "failed":
            assert isinstance(prediction["error"], str)
            assert prediction["error"]
        else:
            assert prediction["error"] is None
            assert prediction["output"]


async def test_abort_rate_is_the_share_that_aborts(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0, abortRate=0.5)
    created = await create_many(simulator, [None] * 200)
    shown = await finals(simulator, [p["id"] for p in created])
    counts = Counter(p["status"] for p in shown)
    assert set(counts) == {"aborted", "succeeded"}, counts
    assert 70 <= counts["aborted"] <= 130, counts
    for prediction in shown:
        if prediction["status"] == "aborted":
            assert "started_at" not in prediction  # it never started
            assert prediction["output"] is None


async def test_api_error_rate_is_the_share_of_calls_answered_500(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=0)
    created = await create(simulator)
    await simulator.configure(apiErrorRate=0.3)
    gate = asyncio.Semaphore(16)

    async def call() -> httpx.Response:
        async with gate:
            return await simulator.http.get(f"/v1/predictions/{created['id']}")

    responses = await asyncio.gather(*(call() for _ in range(200)))
    counts = Counter(r.status_code for r in responses)
    assert set(counts) == {200, 500}, counts
    assert 30 <= counts[500] <= 90, counts
    for response in responses:
        if response.status_code == 500:
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["status"] == 500
            assert isinstance(problem["detail"], str)
        else:
            assert response.json()["id"] == created["id"]


async def test_an_api_error_after_create_still_creates_the_prediction(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0, apiErrorRate=1, apiErrorAfterCreate=True)
    job = new_job()
    response = await post_create(simulator, hook(receiver, job), ["completed"], prompt="knobs")
    assert response.status_code == 500
    assert response.json()["status"] == 500
    (record,) = await audit(simulator, job)
    assert record["input"] == {"prompt": "knobs"}
    (received,) = await receiver.wait_for(1)
    assert received.query == f"job={job}"
    assert parsed(received)["id"] == record["id"]
    assert parsed(received)["status"] == "succeeded"


async def test_an_api_error_before_create_creates_nothing(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0, apiErrorRate=1, apiErrorAfterCreate=False)
    job = new_job()
    response = await post_create(simulator, hook(receiver, job), ["completed"])
    assert response.status_code == 500
    assert response.json()["status"] == 500
    assert await audit(simulator, job) == []
    assert (await simulator.http.get("/healthz")).json()["predictions"] == 0
    await quiet(simulator)
    assert receiver.received == []


async def test_the_create_rate_limit_throttles_as_replicate_does(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=0, createRateLimitPerMinute=10)
    for _ in range(10):
        await create(simulator)
    response = await post_create(simulator)
    assert response.status_code == 429
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"]
    match = THROTTLED.match(response.json()["detail"])
    assert match is not None, response.text
    assert int(match[1]) == int(retry_after)
    assert (await simulator.http.get("/healthz")).json()["predictions"] == 10

    # Setting the limit again counts from then on.
    await simulator.configure(createRateLimitPerMinute=10)
    await create(simulator)
    # Without a limit, nothing is throttled.
    await simulator.configure(createRateLimitPerMinute=None)
    for _ in range(15):
        await create(simulator)
    assert (await simulator.http.get("/healthz")).json()["predictions"] == 26


# Knobs of the webhooks -----------------------------------------------------------------------


async def test_drop_webhook_rate_is_the_share_of_predictions_without_webhooks(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0, dropWebhookRate=0.2)
    jobs = [new_job() for _ in range(100)]
    # With no latency each ends, and its webhook is due, before its create is answered.
    created = await create_many(simulator, [hook(receiver, job) for job in jobs], ["completed"])
    await quiet(simulator)

    arrived = Counter(job_of(r) for r in receiver.received)
    assert set(arrived.values()) == {1}  # no job got more than one
    dropped = [job for job in jobs if job not in arrived]
    assert 5 <= len(dropped) <= 35, len(dropped)
    for job, prediction in zip(jobs, created, strict=True):
        (record,) = await audit(simulator, job)
        assert record["id"] == prediction["id"]
        assert record["status"] == "succeeded"
        assert bool(record["deliveries"]) == (job in arrived)
        assert record["sim_faults"]["drop_webhooks"] == (job not in arrived)


async def test_drop_webhook_rate_one_drops_every_webhook(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.8, dropWebhookRate=1.0)
    jobs = [new_job() for _ in range(10)]
    created = await create_many(simulator, [hook(receiver, job) for job in jobs])
    shown = await finals(simulator, [p["id"] for p in created])
    assert {p["status"] for p in shown} == {"succeeded"}
    await quiet(simulator)
    assert receiver.received == []
    for job in jobs:
        (record,) = await audit(simulator, job)
        assert record["deliveries"] == []


async def test_duplicate_webhook_rate_one_sends_the_final_webhook_twice(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.3, duplicateWebhookRate=1)
    job = new_job()
    created = await create(simulator, hook(receiver, job), ["start", "completed"])
    await receiver.wait_for(3)
    await quiet(simulator)
    start, first, second = receiver.received
    assert parsed(start)["status"] == "processing"
    assert parsed(first)["status"] == "succeeded"
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.headers["webhook-id"] != start.headers["webhook-id"]
    assert first.body == second.body
    assert parsed(first)["id"] == created["id"]
    (record,) = await audit(simulator, job)
    assert [d["event"] for d in record["deliveries"]] == ["start", "completed", "completed"]


async def test_reorder_webhooks_delivers_a_predictions_webhooks_in_reverse(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.3, reorderWebhooks=True)
    job = new_job()
    created = await create(simulator, hook(receiver, job), ["start", "completed"])
    await receiver.wait_for(2)
    await quiet(simulator)
    assert [parsed(r)["status"] for r in receiver.received] == ["succeeded", "processing"]
    assert {parsed(r)["id"] for r in receiver.received} == {created["id"]}
    (record,) = await audit(simulator, job)
    assert [d["event"] for d in record["deliveries"]] == ["completed", "start"]


async def test_reorder_webhooks_holds_for_many_predictions_ending_together(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.3, reorderWebhooks=True)
    jobs = [new_job() for _ in range(40)]
    await create_many(simulator, [hook(receiver, job) for job in jobs], ["start", "completed"])
    await receiver.wait_for(2 * len(jobs))
    await quiet(simulator)
    arrived: dict[str, list[str]] = {}
    for received in receiver.received:
        arrived.setdefault(job_of(received), []).append(parsed(received)["status"])
    misordered = [job for job in jobs if arrived[job] != ["succeeded", "processing"]]
    assert misordered == [], f"{len(misordered)} of {len(jobs)} not in reverse order"


async def test_held_webhooks_wait_and_then_go_in_creation_order(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.2, holdWebhooks=True)
    jobs = [new_job() for _ in range(8)]
    created = [await create(simulator, hook(receiver, job), ["completed"]) for job in jobs]
    shown = await finals(simulator, [p["id"] for p in created])
    assert {p["status"] for p in shown} == {"succeeded"}

    # Every final webhook made, and none sent: by the simulator's own account rather than by
    # watching a second pass. A send is recorded in the audit before it goes out, and an idle
    # sender takes a queued webhook on the loop's next turn, well before these reads end.
    async def all_made() -> bool:
        health = (await simulator.http.get("/healthz")).json()
        return bool(health["webhooksQueued"] == len(jobs))

    await eventually(all_made)
    for job in jobs:
        (record,) = await audit(simulator, job)
        assert record["deliveries"] == []
    assert receiver.received == []
    assert (await simulator.http.get("/healthz")).json()["webhooksQueued"] == len(jobs)

    await simulator.configure(holdWebhooks=False)
    await receiver.wait_for(len(jobs))
    await quiet(simulator)
    assert [job_of(r) for r in receiver.received] == jobs
    assert [parsed(r)["id"] for r in receiver.received] == [p["id"] for p in created]
    # Sent in creation order too, by the simulator's own account.
    sent_at = []
    for job in jobs:
        (record,) = await audit(simulator, job)
        (delivery,) = record["deliveries"]
        assert (delivery["event"], delivery["status"]) == ("completed", 200)
        sent_at.append(delivery["at"])
    assert sent_at == sorted(sent_at)


async def test_data_removed_after_s_removes_output_and_input_that_long_after_the_end(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.2, dataRemovedAfterS=0.5)
    job = new_job()
    created = await create(simulator, hook(receiver, job), ["completed"])
    # Planned at creation: a later change of the knob does not move this prediction's removal.
    await simulator.configure(dataRemovedAfterS=3600)
    kept = await create(simulator)

    await until_succeeded(receiver)
    (webhook,) = [parsed(r) for r in receiver.received]
    # The completed webhook, sent at the end, still carries the output.
    assert webhook["data_removed"] is False
    assert webhook["output"]
    removed = await read_until(
        lambda: get(simulator, created["id"]),
        lambda shown: shown["data_removed"] is True,
        what="the prediction's data is removed",
    )
    assert (removed["status"], removed["output"], removed["input"]) == ("succeeded", None, {})
    (record,) = await audit(simulator, job)
    assert record["data_removed"] is True
    assert record["output"] is None
    # The other one ended too, and keeps its data for the hour the knob now says.
    (still,) = await finals(simulator, [kept["id"]])
    assert still["status"] == "succeeded"
    assert (still["data_removed"], still["input"]) == (False, {"prompt": "tides"})
    assert still["output"]
