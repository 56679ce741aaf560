"""Prices and spend with the whole system as processes: `GET /api/job-types` (public) shows
each type's input schema, price and most a job may cost; a finished job shows its usage, its
cost the contract's formula over what the simulator reported; `GET /api/usage` totals equal
the jobs' costs to the micro-dollar, with the month's budget from the token's claim."""

import time
import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import jwt

from jobs_proto.job_types import JOB_TYPES
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

from .test_job_flow import job_until


def bearer(stack: Stack, sub: str, **claims: Any) -> dict[str, str]:
    payload = {"sub": sub, "exp": int(time.time() + 600), **claims}
    token = jwt.encode(payload, stack.dev_secrets.jwt_secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def micros(usd: float) -> int:
    return round(usd * 1_000_000)


async def test_the_job_types_are_public_with_their_price(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as gw:
        answer = await gw.get("/api/job-types")  # no token
    assert answer.status_code == 200
    items = answer.json()["items"]
    assert [i["type"] for i in items] == sorted(JOB_TYPES)
    for item in items:
        job_type = JOB_TYPES[item["type"]]
        assert item["model"] == job_type.model
        assert item["deadlineS"] == job_type.deadline_s
        assert item["streams"] is job_type.streams
        assert item["maxCostUsd"] == float(job_type.max_cost_usd)
        price = job_type.price
        assert item["price"] == {
            "perInputTokenUsd": float(price.per_input_token_usd or 0) or None,
            "perOutputTokenUsd": float(price.per_output_token_usd or 0) or None,
            "perPredictSecondUsd": float(price.per_predict_second_usd or 0) or None,
        }
        schema = item["inputSchema"]
        assert schema["type"] == "object"
        assert "topic" in schema["properties"]
        assert "topic" in schema["required"]


def contract_cost(usage: dict[str, Any], job_type: str) -> int:
    """The contract's formula, in micro-dollars, from what the job's usage reports."""
    price = JOB_TYPES[job_type].price
    total = Decimal(0)
    for units, unit_price in (
        (usage["inputTokens"], price.per_input_token_usd),
        (usage["outputTokens"], price.per_output_token_usd),
        (usage["predictTimeS"], price.per_predict_second_usd),
    ):
        if units is not None and unit_price is not None:
            total += Decimal(str(units)) * unit_price
    return int((total * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def test_usage_totals_equal_what_the_jobs_cost(
    stack: Stack, simulator: httpx.AsyncClient
) -> None:
    await simulator.put("/_sim/config", json={"latencyS": 0.5})
    user = f"spender-{uuid.uuid4().hex[:8]}"
    headers = bearer(stack, user, budget_usd=1)
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=10) as gw:
        bodies = [
            ("/api/ideation/generate-titles", {"topic": "tides", "count": 3}),
            ("/api/ideation/generate-titles", {"topic": "moons"}),
            ("/api/ideation/video-outline", {"topic": "comets", "sections": 2}),
        ]
        jobs = []
        for path, body in bodies:
            answer = await gw.post(path, json=body)
            assert answer.status_code == 202, answer.text
            jobs.append(answer.json()["jobId"])
        pending = (await gw.get(f"/api/jobs/{jobs[0]}")).json()
        assert "usage" in pending
        ended = [await job_until(gw, job_id, {"succeeded"}) for job_id in jobs]

        by_type: dict[str, list[int]] = {}
        for job in ended:
            usage = job["usage"]
            assert usage is not None, job
            # The simulator's metrics, priced by the contract's rule: a real computation.
            assert usage["inputTokens"] > 0
            assert usage["outputTokens"] > 0
            cost = micros(usage["costUsd"])
            assert cost == contract_cost(usage, job["type"]) > 0
            by_type.setdefault(job["type"], []).append(cost)
        total = sum(sum(costs) for costs in by_type.values())

        async def settled() -> bool:
            budget = (await gw.get("/api/usage")).json()["budget"]
            return bool(budget["reservedUsd"] == 0)

        await eventually(settled, what="every reservation settled to its job's cost")
        answer = await gw.get("/api/usage")
        assert answer.status_code == 200
        usage_view = answer.json()
        today = datetime.now(UTC).date()
        assert usage_view["from"] == today.replace(day=1).isoformat()
        assert usage_view["jobs"] == 3
        assert micros(usage_view["costUsd"]) == total
        assert {t: (u["jobs"], micros(u["costUsd"])) for t, u in usage_view["byType"].items()} == {
            t: (len(costs), sum(costs)) for t, costs in by_type.items()
        }
        [(day, on_day)] = usage_view["byDay"].items()
        assert (day, on_day["jobs"], micros(on_day["costUsd"])) == (today.isoformat(), 3, total)
        budget = usage_view["budget"]
        assert budget["periodStart"] == today.replace(day=1).isoformat()
        assert budget["limitUsd"] == 1
        assert micros(budget["spentUsd"]) == total
        assert micros(budget["remainingUsd"]) == 1_000_000 - total

        # The same span named, and another: nothing of it.
        named = await gw.get(
            "/api/usage", params={"from": today.isoformat(), "to": today.isoformat()}
        )
        assert micros(named.json()["costUsd"]) == total
        before = await gw.get("/api/usage", params={"from": "2020-01-01", "to": "2020-12-31"})
        assert (before.json()["jobs"], before.json()["byType"]) == (0, {})
        bad = await gw.get("/api/usage", params={"from": "2020-01-01", "to": "2021-06-01"})
        assert bad.status_code == 422
        assert [e["parameter"] for e in bad.json()["errors"]] == ["to"]

    # Without a budget claim (and none configured): spend, no budget.
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as gw:
        other = await gw.get("/api/usage", headers=bearer(stack, user))
        assert other.json()["budget"] is None
        assert micros(other.json()["costUsd"]) == total
