"""The real `replicate` package (1.0.7) as the client over HTTP: it cannot tell the difference.

Where the client has no way to say something (`Cancel-After`) or cannot read the answer
(`aborted`), the raw HTTP exchange is checked beside it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pydantic.v1
import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate.prediction import Prediction

from jobs_testkit.waiting import eventually

from .calls import FINAL, MODEL, VERSION_ID, create, final, get, post_create, read_until, when
from .conftest import SECRET, RunningSimulator, VirtualTime, replicate_client

THROTTLED = re.compile(r"^Request was throttled\. Your rate limit resets in ~([1-9][0-9]*)s\.$")


async def finished(client: replicate.Client, prediction_id: str) -> Prediction:
    return await read_until(
        lambda: client.predictions.async_get(prediction_id),
        lambda p: p.status in FINAL,
        within=15,
        what=f"prediction {prediction_id} ends",
    )


def text(prediction: Prediction) -> str:
    assert isinstance(prediction.output, list)
    assert prediction.output
    assert all(isinstance(chunk, str) for chunk in prediction.output)
    return "".join(prediction.output)


# Creating and reading ----------------------------------------------------------------------------


async def test_an_official_model_prediction_runs_to_success(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0.3)
    async with replicate_client(simulator.url) as client:
        created = await client.predictions.async_create(model=MODEL, input={"prompt": "tides"})
        assert created.status == "starting"
        assert created.model == MODEL
        assert created.version == "hidden"
        assert created.urls is not None
        assert created.urls["get"] == f"{simulator.url}/v1/predictions/{created.id}"

        done = await finished(client, created.id)
    assert done.id == created.id
    assert done.status == "succeeded"
    assert done.error is None
    assert text(done).startswith("Simulated answer to: tides")
    assert when(done.created_at) <= when(done.started_at) <= when(done.completed_at)
    assert done.metrics is not None
    assert done.metrics["predict_time"] > 0


@pytest.mark.parametrize(
    ("version", "model"),
    [(f"acme/writer:{VERSION_ID}", "acme/writer"), (VERSION_ID, None)],
    ids=["model-and-version", "bare-version-id"],
)
async def test_a_version_prediction_runs_to_success(
    simulator: RunningSimulator, version: str, model: str | None
) -> None:
    await simulator.configure(latencyS=0.3)
    async with replicate_client(simulator.url) as client:
        created = await client.predictions.async_create(version=version, input={"prompt": "tides"})
        assert created.status == "starting"
        assert created.version == VERSION_ID
        if model is not None:
            assert created.model == model
        done = await finished(client, created.id)
    assert done.status == "succeeded"
    assert text(done).startswith("Simulated answer to: tides")


async def test_the_output_is_deterministic_in_the_input(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0.3)
    inputs = [{"prompt": "tides"}, {"prompt": "tides"}, {"prompt": "moons"}]
    async with replicate_client(simulator.url) as client:
        created = [
            await client.predictions.async_create(model=MODEL, input=model_input)
            for model_input in inputs
        ]
        done = await asyncio.gather(*(finished(client, p.id) for p in created))
    first, again, other = (text(p) for p in done)
    assert len({p.id for p in done}) == 3
    assert all(p.status == "succeeded" for p in done)
    assert isinstance(done[0].output, list)
    assert len(done[0].output) > 1  # streamed in chunks
    assert first == again
    assert first != other


# Cancel ------------------------------------------------------------------------------------------


async def test_cancel_a_running_prediction(
    simulator_in_virtual_time: RunningSimulator, virtual_time: VirtualTime
) -> None:
    simulator = simulator_in_virtual_time
    await simulator.configure(latencyS=1.5)
    async with replicate_client(simulator.url) as client:
        created = await client.predictions.async_create(model=MODEL, input={"prompt": "tides"})
        virtual_time.advance(0.5)  # running
        canceled = await client.predictions.async_cancel(created.id)
        assert canceled.id == created.id
        assert canceled.status == "canceled"
        assert canceled.completed_at is not None
        # Past the moment it would have succeeded, it is still canceled.
        virtual_time.advance(1.5)
        later = await client.predictions.async_get(created.id)
    assert later.status == "canceled"
    assert later.completed_at == canceled.completed_at
    assert (when(later.completed_at) - when(later.created_at)).total_seconds() == 0.5


async def test_cancel_a_finished_prediction_changes_nothing(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0.1)
    async with replicate_client(simulator.url) as client:
        created = await client.predictions.async_create(model=MODEL, input={"prompt": "tides"})
        done = await finished(client, created.id)
        after = await client.predictions.async_cancel(created.id)
    assert done.status == "succeeded"
    assert after.status == "succeeded"
    assert after.output == done.output
    assert after.completed_at == done.completed_at


# Prefer: wait ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "wait"), [("model", True), ("version", 5)], ids=["model-wait", "version-wait=5"]
)
async def test_prefer_wait_answers_with_the_finished_prediction(
    simulator_in_virtual_time: RunningSimulator,
    virtual_time: VirtualTime,
    wait: bool | int,
    route: str,
) -> None:
    simulator = simulator_in_virtual_time
    await simulator.configure(latencyS=0.5)
    async with replicate_client(simulator.url) as client:
        if route == "model":
            # `client.models.predictions`: `client.predictions.async_create(model=...)` drops
            # `wait` (see the next test).
            creating = client.models.predictions.async_create(
                model=MODEL, input={"prompt": "tides"}, wait=wait
            )
        else:
            creating = client.predictions.async_create(
                version=f"acme/writer:{VERSION_ID}", input={"prompt": "tides"}, wait=wait
            )
        answer = asyncio.ensure_future(creating)
        await eventually(lambda: simulator.sim.size == 1, what="the prediction is created")
        # Time stands still, so only the prediction's end can release the answer.
        virtual_time.advance(0.5)
        prediction = await asyncio.wait_for(answer, 10)
    assert prediction.status == "succeeded"
    assert text(prediction).startswith("Simulated answer to: tides")


async def test_the_client_drops_wait_for_a_model_passed_to_predictions_create(
    simulator: RunningSimulator,
) -> None:
    """`client.predictions.async_create(model=..., wait=...)` pops `wait` before handing over to
    `client.models.predictions.async_create`, so no `Prefer` header is sent: the answer is the
    new prediction at once. Code that wants `Prefer: wait` on an official model must call
    `client.models.predictions.async_create` itself."""
    await simulator.configure(latencyS=0.5)
    async with replicate_client(simulator.url) as client:
        prediction = await client.predictions.async_create(
            model=MODEL, input={"prompt": "tides"}, wait=True
        )
    assert prediction.status == "starting"


async def test_prefer_wait_gives_up_after_the_seconds_asked_for(
    simulator_in_virtual_time: RunningSimulator, virtual_time: VirtualTime
) -> None:
    simulator = simulator_in_virtual_time
    await simulator.configure(latencyS=3)
    async with replicate_client(simulator.url) as client:
        answer = asyncio.ensure_future(
            client.predictions.async_create(
                version=f"acme/writer:{VERSION_ID}", input={"prompt": "tides"}, wait=1
            )
        )
        await eventually(lambda: simulator.sim.size == 1, what="the prediction is created")
        await eventually(lambda: 1 in virtual_time.delays, what="the wait of 1 s is set")
        # Time stands still: only the 1 s passing lets the server give up and answer.
        virtual_time.advance(1)
        prediction = await asyncio.wait_for(answer, 10)
    assert prediction.status == "processing"
    assert prediction.completed_at is None


# List --------------------------------------------------------------------------------------------


async def test_the_list_pages_newest_first(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0)
    async with replicate_client(simulator.url) as client:

        async def create(n: int) -> str:
            prediction = await client.predictions.async_create(
                model=MODEL, input={"prompt": f"p{n}"}
            )
            return prediction.id

        created: list[str] = []
        for batch in range(0, 229, 10):
            numbers = range(batch, min(batch + 10, 229))
            created += await asyncio.gather(*(create(n) for n in numbers))
        newest = await create(229)  # after all the others: it must come first
        created.append(newest)

        first = await client.predictions.async_list()
        assert first.next is not None
        second = await client.predictions.async_list(first.next)
        assert second.next is not None
        assert second.previous is not None
        third = await client.predictions.async_list(second.next)
        back = await client.predictions.async_list(second.previous)

    assert [len(page) for page in (first, second, third)] == [100, 100, 30]
    assert first.previous is None
    assert third.next is None
    assert third.previous is not None
    assert [p.id for p in back] == [p.id for p in first]
    seen = [p for page in (first, second, third) for p in page]
    ids = [p.id for p in seen]
    assert ids[0] == newest
    assert len(set(ids)) == len(ids) == 230
    assert set(ids) == set(created)
    times = [when(p.created_at) for p in seen]
    assert times == sorted(times, reverse=True)


# Webhook secret ----------------------------------------------------------------------------------


async def test_the_webhook_secret_is_the_simulators(simulator: RunningSimulator) -> None:
    async with replicate_client(simulator.url) as client:
        secret = await client.webhooks.default.async_secret()
    assert secret.key == SECRET
    assert simulator.sim.settings.sim_webhook_secret == SECRET


# What the client cannot do -----------------------------------------------------------------------


async def test_the_client_cannot_read_an_aborted_prediction(simulator: RunningSimulator) -> None:
    """`replicate` 1.0.7 knows five statuses, not `aborted`: its `Prediction` model refuses it.

    So the ai-runner must read predictions with its own HTTP reader (as here, the raw GET),
    not with `predictions.async_get`, or an aborted prediction would look like an error.
    """
    await simulator.configure(latencyS=0.2, abortRate=1)
    async with replicate_client(simulator.url) as client:
        created = await client.predictions.async_create(model=MODEL, input={"prompt": "tides"})
        body = await final(simulator, created.id, within=15)
        assert body["status"] == "aborted"
        with pytest.raises(pydantic.v1.ValidationError, match="status"):
            await client.predictions.async_get(created.id)
    assert body["output"] is None
    assert "started_at" not in body


async def test_cancel_after_ends_a_prediction_at_its_deadline(
    simulator_in_virtual_time: RunningSimulator, virtual_time: VirtualTime
) -> None:
    """The client has no parameter for `Cancel-After`, so it is sent by hand.

    Started by the deadline (at 0.8 s of 8 s): `canceled`. Would start only after it (at 6 s of
    60 s): `aborted`. Both at 5 s after creation, and not a moment before.
    """
    simulator = simulator_in_virtual_time

    async def created(latency_s: float) -> dict[str, Any]:
        await simulator.configure(latencyS=latency_s)  # applies to the next creation
        return await create(simulator, headers={"Cancel-After": "5s"})

    def ended_by_timer(body: dict[str, Any]) -> bool:
        prediction = simulator.sim.get(body["id"])
        assert prediction is not None
        return prediction.finished

    running, queued = await created(8), await created(60)
    for body in (running, queued):
        assert body["status"] == "starting"
        assert (when(body["deadline"]) - when(body["created_at"])).total_seconds() == 5

    virtual_time.advance(4.5)  # just before the deadline
    assert (await get(simulator, running["id"]))["status"] == "processing"
    assert (await get(simulator, queued["id"]))["status"] == "starting"
    assert not any(ended_by_timer(p) for p in (running, queued))

    virtual_time.advance(0.5)  # the deadline: both end by their timers, not by a later read
    assert all(ended_by_timer(p) for p in (running, queued))
    canceled, aborted = await get(simulator, running["id"]), await get(simulator, queued["id"])
    assert canceled["status"] == "canceled"
    assert "started_at" in canceled
    assert canceled["deadline"] == running["deadline"]
    assert canceled["completed_at"] == canceled["deadline"]
    assert aborted["status"] == "aborted"
    assert "started_at" not in aborted
    assert aborted["deadline"] == queued["deadline"]
    assert aborted["completed_at"] == aborted["deadline"]
    # The client reads the canceled one (the aborted one it cannot: see above).
    async with replicate_client(simulator.url) as client:
        seen = await client.predictions.async_get(running["id"])
    assert seen.status == "canceled"


async def test_creating_past_the_rate_limit_is_429(simulator: RunningSimulator) -> None:
    """The client never retries a create: the 429 reaches the caller as a `ReplicateError`."""
    await simulator.configure(latencyS=60, createRateLimitPerMinute=10)
    async with replicate_client(simulator.url) as client:
        for n in range(10):
            await client.predictions.async_create(model=MODEL, input={"prompt": f"p{n}"})
        with pytest.raises(ReplicateError) as caught:
            await client.predictions.async_create(model=MODEL, input={"prompt": "p10"})
    error = caught.value
    assert error.status == 429
    assert error.detail is not None
    assert THROTTLED.match(error.detail), error.detail
    assert simulator.sim.size == 10

    response = await post_create(simulator, prompt="p11")
    assert response.status_code == 429
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60
    assert response.headers["ratelimit-remaining"] == "0"
    match = THROTTLED.match(response.json()["detail"])
    assert match is not None, response.text
    assert match[1] == retry_after
    assert simulator.sim.size == 10
