"""Budgets with the whole system as processes: 100 concurrent submissions by one user across
two gateway processes against a budget that fits exactly 10 reservations (10 admitted, 90
`402`, the freed budget admitting more once the 10 ended); everyone's day budget; and the
check order around `402` (an invalid job is `422`, an idempotent replay of an admitted job its
first answer)."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from jobs_proto.job_types import JOB_TYPES
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.running import running_stack
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

from .test_job_flow import job_until

TITLES = {"type": "title_generation", "input": {"topic": "budgeted tides"}}
# `title_generation` reserves $0.02 a job.
MAX_COST_USD = float(JOB_TYPES["title_generation"].max_cost_usd)
PROBLEM = "application/problem+json"


def titles(topic: str) -> dict[str, Any]:
    return {**TITLES, "input": {"topic": topic}}


def bearer(stack: Stack, sub: str, **claims: Any) -> dict[str, str]:
    """A token of the stack's gateway for `sub`, with `claims` (the budget claim)."""
    payload = {"sub": sub, "exp": int(time.time() + 600), **claims}
    token = jwt.encode(payload, stack.dev_secrets.jwt_secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def another_gateway(stack: Stack, log: Path, **settings: str) -> Iterator[str]:
    """One more gateway process over the stack's NATS, stream and job-store (a replica), on
    ports of its own; its base URL."""
    env = {
        **stack.service_environment("gateway"),
        "HTTP_PORT": str(free_port()),
        "ADMIN_PORT": str(free_port()),
        **settings,
    }
    with ServiceProcess([command_path("gateway")], env, log) as process:
        process.wait_http(f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz", timeout=60)
        yield f"http://127.0.0.1:{env['HTTP_PORT']}"
        assert process.terminate() == 0, process.log


async def test_concurrent_submissions_across_replicas_never_pass_the_budget(
    stack: Stack, simulator: httpx.AsyncClient, tmp_path: Path
) -> None:
    user = f"budget-{uuid.uuid4().hex[:8]}"
    # Exactly 10 reservations of $0.02.
    headers = bearer(stack, user, budget_usd=10 * MAX_COST_USD)
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers=headers) as http:
        with another_gateway(stack, tmp_path / "replica.log") as replica:
            urls = [stack.gateway_url, replica]
            answers = await asyncio.gather(
                *(http.post(f"{urls[n % 2]}/api/jobs", json=titles(f"t{n}")) for n in range(100))
            )
        statuses = [a.status_code for a in answers]
        assert (statuses.count(202), statuses.count(402)) == (10, 90), statuses
        refused = next(a for a in answers if a.status_code == 402)
        assert refused.headers["content-type"] == PROBLEM
        problem = refused.json()
        assert problem["type"].endswith("budget-exceeded")
        assert problem["limitUsd"] == pytest.approx(10 * MAX_COST_USD)
        assert problem["remainingUsd"] < MAX_COST_USD
        # Both replicas admitted and refused: the budget is one, not one per process.
        admitted_by = {n % 2 for n, a in enumerate(answers) if a.status_code == 202}
        refused_by = {n % 2 for n, a in enumerate(answers) if a.status_code == 402}
        assert refused_by == {0, 1}
        assert admitted_by

        gateway = httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=10)
        async with gateway:
            jobs = [a.json()["jobId"] for a in answers if a.status_code == 202]
            ended = [await job_until(gateway, job_id, {"succeeded"}) for job_id in jobs]
            spent = sum(round(job["usage"]["costUsd"] * 1_000_000) for job in ended)
            assert 0 < spent < 10 * MAX_COST_USD * 1_000_000

            async def budget() -> dict[str, Any]:
                answer: dict[str, Any] = (await gateway.get("/api/usage")).json()["budget"]
                return answer

            async def settled() -> bool:
                return (await budget())["reservedUsd"] == 0

            await eventually(settled, what="the 10 jobs' reservations settled")
            after = await budget()
            assert round(after["spentUsd"] * 1_000_000) == spent
            # What the 10 did not spend is free again.
            more = await gateway.post("/api/jobs", json=TITLES)
            assert more.status_code == 202, more.text
            await job_until(gateway, more.json()["jobId"], {"succeeded"})


async def test_an_invalid_job_is_422_and_a_replay_is_not_402(stack: Stack) -> None:
    user = f"order-{uuid.uuid4().hex[:8]}"
    headers = bearer(stack, user, budget_usd=MAX_COST_USD)  # room for one job
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=10) as gw:
        keyed = {"Idempotency-Key": f"once-{user}"}
        first = await gw.post("/api/jobs", json=TITLES, headers=keyed)
        assert first.status_code == 202, first.text
        full = await gw.post("/api/jobs", json=TITLES)
        assert full.status_code == 402, full.text
        # Validation comes before the budget...
        bad = await gw.post("/api/jobs", json={"type": "title_generation", "input": {}})
        assert bad.status_code == 422, bad.text
        typed = await gw.post("/api/ideation/generate-titles", json={"topic": ""})
        assert typed.status_code == 422, typed.text
        # ... and an admitted job's replay is its first answer, the budget full or not.
        again = await gw.post("/api/jobs", json=TITLES, headers=keyed)
        assert (again.status_code, again.content) == (202, first.content)
        assert again.headers["idempotent-replayed"] == "true"
        # A new key with the budget full is refused like any new job.
        other = await gw.post("/api/jobs", json=TITLES, headers={"Idempotency-Key": f"2-{user}"})
        assert other.status_code == 402, other.text


# --- everyone's day -----------------------------------------------------------------------

DAY_BUDGET_USD = 2.5 * MAX_COST_USD  # two jobs fit, a third does not


@pytest.fixture(scope="module")
def day_budget_stack(
    nats_url: str,
    nats_server: NatsServer | None,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The job-store and a gateway with `GLOBAL_BUDGET_USD_PER_DAY`, over a database and
    stream of their own (the day's budget counts every job of the day): no job runs, none
    needs to for admission."""
    with running_stack(
        nats_url=nats_url,
        nats_server=nats_server,
        postgres_url=postgres_url,
        log_dir=tmp_path_factory.mktemp("day-budget"),
        overrides={"GLOBAL_BUDGET_USD_PER_DAY": str(DAY_BUDGET_USD)},
        services=("job-store", "gateway"),
    ) as running:
        yield running


async def test_the_day_budget_holds_every_user_together(day_budget_stack: Stack) -> None:
    stack = day_budget_stack
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as gw:
        answers = [
            await gw.post("/api/jobs", json=TITLES, headers=bearer(stack, user))
            for user in ("ann", "ben", "cat")
        ]
        assert [a.status_code for a in answers] == [202, 202, 402]
        problem = answers[2].json()
        assert problem["type"].endswith("budget-exceeded")
        assert problem["limitUsd"] == DAY_BUDGET_USD
        assert problem["remainingUsd"] == pytest.approx(DAY_BUDGET_USD - 2 * MAX_COST_USD)
        # No user budget: nobody has one to show.
        usage = await gw.get("/api/usage", headers=bearer(stack, "ann"))
        assert usage.status_code == 200
        assert usage.json()["budget"] is None
        admin = f"http://127.0.0.1:{stack.ports.gateway_admin}/metrics"
        metrics = (await gw.get(admin)).text
        assert 'gateway_budget_exceeded_total{scope="global"} 1.0' in metrics
