"""The spend routes and the budget refusal over HTTP, in process over fake ports: the job types
(public, with schemas and prices), the caller's usage (its span, its budget from the token's
claim or the configuration), `402` on both admission paths with its numbers and its count, and
the check order around it (`422` first, an idempotent replay never `402`)."""

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import jwt
import pytest

from gateway.adapters.http import GatewayPorts, build_app
from gateway.auth import TokenVerifier
from gateway.budgets import Spending
from jobs_proto.job_types import JOB_TYPES
from jobs_proto.spend import GetUsage, TypeUsage, UsageReport

from ..fakes import FakeJobSystem, RecordingObserver

SECRET = "unit-test-secret-0123456789abcdef0123"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
TITLES = {"type": "title_generation", "input": {"topic": "tides"}}
PROBLEM = "application/problem+json"


def auth(sub: str = "alice", **claims: Any) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time() + 300), **claims}, SECRET, "HS256")
    return {"Authorization": f"Bearer {token}"}


@dataclass
class System(FakeJobSystem):
    observer: RecordingObserver = field(default_factory=RecordingObserver)


@pytest.fixture
def system() -> System:
    return System()


def client_of(system: System, *, user_micros: int | None = None) -> httpx.AsyncClient:
    ports = GatewayPorts(
        verifier=TokenVerifier([SECRET]),
        bus=system.stream,
        store=system.store,
        requested=system.stream,
        max_body_bytes=4096,
        clock=lambda: NOW,
        keys=system.keys,
        spending=Spending(system.budgets, user_micros=user_micros),
        observer=system.observer,
    )
    transport = httpx.ASGITransport(build_app(ports), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    # $0.05 a month: two `title_generation` jobs ($0.02 each) fit, a third does not.
    async with client_of(system, user_micros=50_000) as client:
        yield client


async def test_the_job_types_are_public_with_their_schema_and_price(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/api/job-types")
    assert answer.status_code == 200
    assert answer.headers["cache-control"].startswith("public")
    items = answer.json()["items"]
    assert [i["type"] for i in items] == sorted(JOB_TYPES)
    titles = next(i for i in items if i["type"] == "title_generation")
    assert set(titles) == {
        "type",
        "model",
        "streams",
        "deadlineS",
        "inputSchema",
        "price",
        "maxCostUsd",
    }
    assert titles["maxCostUsd"] == 0.02
    assert titles["price"] == {
        "perInputTokenUsd": 0.000002,
        "perOutputTokenUsd": 0.000012,
        "perPredictSecondUsd": None,
    }
    schema = titles["inputSchema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["topic"]
    assert set(schema["properties"]) == {"topic", "count"}
    assert "$ref" not in str(schema)  # stands alone


async def test_a_job_past_the_budget_is_402_with_its_numbers_on_both_paths(
    client: httpx.AsyncClient, system: System
) -> None:
    lean = [await client.post("/api/jobs", json=TITLES, headers=auth()) for _ in range(3)]
    assert [a.status_code for a in lean] == [202, 202, 402]
    refused = lean[2]
    assert refused.headers["content-type"] == PROBLEM
    body = refused.json()
    assert body["type"].endswith("budget-exceeded")
    assert body["status"] == 402
    assert (body["limitUsd"], body["remainingUsd"]) == (0.05, 0.01)
    # The route (an `Idempotency-Key` goes there) answers the same.
    keyed = await client.post(
        "/api/jobs", json=TITLES, headers={**auth(), "Idempotency-Key": "k-1"}
    )
    assert keyed.status_code == 402
    assert {k: v for k, v in keyed.json().items() if k != "detail"} == {
        k: v for k, v in body.items() if k != "detail"
    }
    assert len(system.published) == 2
    assert system.observer.facts.count(("budget_exceeded", "user")) == 2


async def test_an_invalid_job_is_422_before_its_budget_is_looked_at(
    client: httpx.AsyncClient, system: System
) -> None:
    broke = auth("broke", budget_usd=0)
    bad = {"type": "title_generation", "input": {"topic": ""}}
    assert (await client.post("/api/jobs", json=bad, headers=broke)).status_code == 422
    assert (await client.post("/api/jobs", json=TITLES, headers=broke)).status_code == 402
    assert [r.user_limit_micros for r in system.budgets.asked] == [0]


async def test_a_replay_of_an_admitted_job_is_its_first_answer_not_402(
    client: httpx.AsyncClient,
) -> None:
    keyed = {**auth(), "Idempotency-Key": "k-1"}
    first = await client.post("/api/jobs", json=TITLES, headers=keyed)
    assert (await client.post("/api/jobs", json=TITLES, headers=auth())).status_code == 202
    assert (await client.post("/api/jobs", json=TITLES, headers=auth())).status_code == 402
    again = await client.post("/api/jobs", json=TITLES, headers=keyed)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"


async def test_the_tokens_claim_overrides_the_budget_and_a_bad_one_is_ignored(
    client: httpx.AsyncClient, system: System, caplog: pytest.LogCaptureFixture
) -> None:
    rich = auth("rich", budget_usd=10)
    answers = [(await client.post("/api/jobs", json=TITLES, headers=rich)) for _ in "abc"]
    assert [a.status_code for a in answers] == [202, 202, 202]
    caplog.set_level(logging.WARNING, logger="gateway.auth")
    odd = auth("odd", budget_usd="lots")
    statuses = [
        (await client.post("/api/jobs", json=TITLES, headers=odd)).status_code for _ in "abc"
    ]
    assert statuses == [202, 202, 402]  # the configured $0.05
    assert any(r.message == "token budget claim ignored" for r in caplog.records)
    limits = {r.user_id: r.user_limit_micros for r in system.budgets.asked}
    assert limits == {"rich": 10_000_000, "odd": 50_000}


async def test_the_job_store_away_is_503_for_a_budgeted_job(
    client: httpx.AsyncClient, system: System
) -> None:
    system.budgets.down = True
    answer = await client.post("/api/jobs", json=TITLES, headers=auth())
    assert answer.status_code == 503
    assert "retry-after" in answer.headers
    assert system.published == []


async def test_usage_of_the_current_month_with_the_budget(
    client: httpx.AsyncClient, system: System
) -> None:
    system.budgets.report = UsageReport(
        by_type={"title_generation": TypeUsage(jobs=2, cost_micros=31_234)},
        by_day={date(2030, 1, 1): TypeUsage(jobs=2, cost_micros=31_234)},
    )
    assert (await client.post("/api/jobs", json=TITLES, headers=auth())).status_code == 202
    answer = await client.get("/api/usage", headers=auth())
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "private, no-store"
    assert answer.json() == {
        "from": "2030-01-01",
        "to": "2030-01-31",
        "jobs": 2,
        "costUsd": 0.031234,
        "byType": {"title_generation": {"jobs": 2, "costUsd": 0.031234}},
        "byDay": {"2030-01-01": {"jobs": 2, "costUsd": 0.031234}},
        "budget": {
            "periodStart": "2030-01-01",
            "limitUsd": 0.05,
            "spentUsd": 0,
            "reservedUsd": 0.02,
            "remainingUsd": 0.03,
        },
    }
    assert system.budgets.usages == [
        GetUsage(
            user_id="alice",
            first=date(2030, 1, 1),
            last=date(2030, 1, 31),
            today=date(2030, 1, 2),
            limit_micros=50_000,
        )
    ]


async def test_usage_without_a_budget_has_none(system: System) -> None:
    async with client_of(system) as client:
        answer = await client.get("/api/usage?from=2029-12-01&to=2030-01-31", headers=auth("bob"))
        assert answer.status_code == 200
        assert answer.json()["budget"] is None
        assert (answer.json()["from"], answer.json()["to"]) == ("2029-12-01", "2030-01-31")
        claimed = await client.get("/api/usage", headers=auth("carol", budget_usd=2))
        assert claimed.json()["budget"]["limitUsd"] == 2
    assert [u.limit_micros for u in system.budgets.usages] == [None, 2_000_000]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("from=2030-13-01", "from"),
        ("to=soon", "to"),
        ("from=2030-01-05&to=2030-01-04", "from"),
        ("from=2029-01-01&to=2030-01-31", "to"),
    ],
)
async def test_a_bad_span_is_422_naming_the_parameter(
    client: httpx.AsyncClient, system: System, query: str, parameter: str
) -> None:
    answer = await client.get(f"/api/usage?{query}", headers=auth())
    assert answer.status_code == 422
    assert answer.headers["content-type"] == PROBLEM
    assert [e["parameter"] for e in answer.json()["errors"]] == [parameter]
    assert system.budgets.usages == []


async def test_usage_needs_a_token(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/usage")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
