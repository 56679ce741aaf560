"""Attacks on the job a webhook speaks for, through the whole system (every service a real
process): a validly signed webhook replayed against another job, one naming no job of ours, and
news and output of a prediction that is not the job's. None of them changes the victim's job or
reaches its event stream; the last two are parked where an operator sees them."""

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
from nats.errors import TimeoutError as NatsTimeoutError
from standardwebhooks.webhooks import Webhook

from jobs_proto.stream import PARK_REASON_HEADER, parked_stream
from jobs_proto.subjects import Subjects
from jobs_testkit.sse import events
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually


def signed(stack: Stack, body: bytes, webhook_id: str) -> dict[str, str]:
    """Headers as Replicate signs them: what anyone holding one signed webhook (a proxy log, a
    leaked request) can send again within five minutes."""
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(stack.dev_secrets.webhook_secret).sign(
            webhook_id, now, body.decode()
        ),
    }


def prediction_body(
    stack: Stack, prediction_id: str, status: str, output: Any, job_id: str | None
) -> bytes:
    """A prediction as Replicate sends it, echoing the webhook URL it was created with."""
    return json.dumps(
        {
            "id": prediction_id,
            "model": "google/gemini-3-pro",
            "version": "hidden",
            "status": status,
            "input": {"prompt": "x"},
            "output": output,
            "error": None,
            "logs": "",
            "data_removed": False,
            "metrics": {"predict_time": 1.0} if status == "succeeded" else {},
            "webhook": None if job_id is None else f"{stack.webhook_url}?job={job_id}",
        }
    ).encode()


async def processing(gateway: httpx.AsyncClient, topic: str) -> dict[str, Any]:
    """A new job, once the job-store has it bound to its prediction."""
    created = await gateway.post("/api/ideation/generate-script", json={"topic": topic})
    assert created.status_code == 202, created.text
    job_id = created.json()["jobId"]
    job: dict[str, Any] = {}

    async def bound() -> bool:
        nonlocal job
        job = (await gateway.get(f"/api/jobs/{job_id}")).json()
        return bool(job["predictionId"])

    await eventually(bound, within=30.0)
    return job


async def stream_to_the_end(response: httpx.Response) -> list[tuple[str, Any]]:
    """(event, data) of every event of a job's stream, which closes after the terminal state."""
    return [(event.event, event.json()) async for event in events(response) if event.data]


async def test_no_signed_webhook_can_speak_for_a_job_it_was_not_made_for(
    stack: Stack,
    gateway: httpx.AsyncClient,
    simulator: httpx.AsyncClient,
    nats_url: str,
) -> None:
    # Long enough that both jobs are still running while the attacks are made.
    await simulator.put("/_sim/config", json={"latencyS": 8})
    attacker = await processing(gateway, "the attacker's job")
    victim = await processing(gateway, "the victim's job")
    victim_id = victim["jobId"]
    webhooks = httpx.AsyncClient(timeout=10)
    async with (
        webhooks,
        gateway.stream("GET", f"/api/jobs/{victim_id}/events", timeout=60) as events,
    ):
        assert events.status_code == 200

        # 1. The attacker's own signed webhooks (output, start, final), `?job=` set to the victim.
        for n, (status, output) in enumerate(
            [("processing", ["INJECTED"]), ("starting", None), ("succeeded", ["INJECTED"])]
        ):
            body = prediction_body(
                stack, attacker["predictionId"], status, output, attacker["jobId"]
            )
            replayed = await webhooks.post(
                stack.webhook_url,
                params={"job": victim_id},
                content=body,
                headers=signed(stack, body, f"msg_replay_{n}"),
            )
            assert replayed.status_code == 400, replayed.text
            assert replayed.json()["type"].endswith("job-mismatch")

        # 2. A prediction made elsewhere in the account, its webhook pointed at us: 200, parked.
        elsewhere = prediction_body(stack, "pred-elsewhere", "succeeded", ["x"], None)
        parked_answer = await webhooks.post(
            stack.webhook_url, content=elsewhere, headers=signed(stack, elsewhere, "msg_elsewhere")
        )
        assert parked_answer.status_code == 200, parked_answer.text

        # 3. Output, start and end of a second prediction whose signed URL names the victim (as
        # a create whose answer was lost leaves behind): never the victim's.
        for n, (status, output) in enumerate(
            [("processing", ["SECOND"]), ("starting", None), ("succeeded", ["SECOND"])]
        ):
            body = prediction_body(stack, "pred-second", status, output, victim_id)
            answer = await webhooks.post(
                stack.webhook_url,
                params={"job": victim_id},
                content=body,
                headers=signed(stack, body, f"msg_second_{n}"),
            )
            assert answer.status_code == 200, answer.text

        received = await stream_to_the_end(events)

    statuses = [data for name, data in received if name == "status"]
    progress = [data for name, data in received if name == "progress"]
    final = statuses[-1]
    assert final["status"] == "succeeded"
    assert final["predictionId"] == victim["predictionId"]
    assert final["output"].startswith("Simulated answer to: ")
    assert all(p["predictionId"] == victim["predictionId"] for p in progress)
    assert not any("INJECTED" in json.dumps(d) or "SECOND" in json.dumps(d) for _, d in received)
    done = (await gateway.get(f"/api/jobs/{victim_id}")).json()
    assert (done["output"], done["predictionId"]) == (final["output"], victim["predictionId"])

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        spec = parked_stream(Subjects(stack.subject_prefix), stack.jobs_stream)
        kept = await js.pull_subscribe(f"{stack.subject_prefix}job_parked.>", stream=spec.name)
        reasons: list[str] = []

        async def all_parked() -> bool:
            # The webhook naming no job, and the second prediction's start and end.
            with contextlib.suppress(NatsTimeoutError):
                for message in await kept.fetch(3 - len(reasons), timeout=0.5):
                    reasons.append((message.headers or {})[PARK_REASON_HEADER])
            return len(reasons) >= 3

        await eventually(all_parked, within=30.0)
        assert sorted(reasons) == ["no_job", "other_prediction", "other_prediction"]
    finally:
        await nc.close()
    # The attacker's job is untouched by all of it and ends with its own result.
    attacked = (await gateway.get(f"/api/jobs/{attacker['jobId']}")).json()
    assert "INJECTED" not in json.dumps(attacked)
