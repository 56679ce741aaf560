from jobs_testkit.receiver import Receiver

from .conftest import RunningSimulator, replicate_client


async def test_a_prediction_runs_and_calls_back(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    await simulator.configure(latencyS=0.3)
    async with replicate_client(simulator.url) as client:
        prediction = await client.predictions.async_create(
            model="google/gemini-3-pro",
            input={"prompt": "tides"},
            webhook=receiver.url + "?job=j1",
            webhook_events_filter=["start", "completed"],
        )
    assert prediction.status == "starting"
    got = await receiver.wait_for(2)
    assert [r.query for r in got] == ["job=j1", "job=j1"]
