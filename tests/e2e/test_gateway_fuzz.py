"""Schemathesis against the gateway's own `/openapi.json`: a gateway and a real job-store as
processes over real NATS and Postgres, over a thousand generated requests (valid and
invalid data, with a valid token and without) and not one `5xx` nor one answer outside the
document (status, content type, headers, body schema)."""

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs_proto.stream import StreamSpec
from jobs_proto.subjects import Subjects
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import free_port

from .test_gateway_processes import database_migrations as database_migrations
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env
from .test_gateway_processes import token

# Per operation and run; 8 operations x (3 runs) comes to well over 1,000 requests (the
# multiplexed event stream, which never ends, is left out).
EXAMPLES = {"valid": 80, "invalid": 50, "anonymous": 30}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class Tally:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


@pytest.fixture
def system(
    tmp_path: Path,
    gateway_env: dict[str, str],
    database_url: str,
    jobs_stream_ready: StreamSpec,
    subjects: Subjects,
) -> Iterator[str]:
    """A job-store and a gateway on the test's stream, database and subject prefix."""
    store_env = {
        "NATS_URL": gateway_env["NATS_URL"],
        "DATABASE_URL": database_url,
        "JOBS_STREAM": jobs_stream_ready.name,
        "SUBJECT_PREFIX": subjects.prefix,
        "ADMIN_PORT": str(free_port()),
    }
    store = ServiceProcess([command_path("job-store")], store_env, tmp_path / "job-store.log")
    gateway = ServiceProcess([command_path("gateway")], gateway_env, tmp_path / "gateway.log")
    with store, gateway:
        store.wait_http(f"http://127.0.0.1:{store_env['ADMIN_PORT']}/readyz", timeout=30)
        gateway.wait_http(f"http://127.0.0.1:{gateway_env['ADMIN_PORT']}/readyz")
        yield f"http://127.0.0.1:{gateway_env['HTTP_PORT']}"
        assert gateway.terminate() == 0, gateway.log
        assert store.terminate() == 0, store.log


def one_run(
    base_url: str,
    operation: Any,
    mode: GenerationMode,
    headers: dict[str, str],
    examples: int,
    tally: Tally,
    session: requests.Session,
) -> None:
    """`examples` requests to one operation; hypothesis raises on the first failed check,
    naming the request (derandomized: the same requests on every run, no flaky CI)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        # CaseInsensitiveDict: a generated `authorization` is the same header.
        case.headers.pop("Authorization", None)
        case.headers.update(headers)
        response = case.call(base_url=base_url, session=session, timeout=10)
        tally.requests += 1
        tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    call()


def fuzz(base_url: str, tally: Tally) -> None:
    """Every operation, each with valid data and a token, invalid data and a token, and
    without a token."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    session = requests.Session()
    # A token that stays valid for the whole run, for a user of this test alone.
    valid = {"Authorization": f"Bearer {token('fuzzer', ttl_s=600)}"}
    runs = [
        ("valid", GenerationMode.POSITIVE, valid),
        ("invalid", GenerationMode.NEGATIVE, valid),
        ("anonymous", GenerationMode.POSITIVE, {}),
    ]
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        if operation.definition.raw.get("operationId") == "streamEvents":
            # Never ends by itself: every valid request would wait for the client timeout.
            # tests/integration/test_events.py covers it.
            continue
        raw = operation.definition.raw
        for run, mode, headers in runs:
            invalid_able = bool(raw.get("parameters")) or "requestBody" in raw
            if mode == GenerationMode.NEGATIVE and not invalid_able:
                # Nothing to make invalid (`/api/job-types`): hypothesis finds no example.
                continue
            one_run(base_url, operation, mode, headers, EXAMPLES[run], tally, session)


async def test_a_thousand_generated_requests_find_no_error_and_no_schema_break(
    system: str,
) -> None:
    tally = Tally()
    started = time.monotonic()
    await asyncio.to_thread(fuzz, system, tally)
    took_s = time.monotonic() - started
    assert tally.requests >= 1000, tally
    # The run reached the interesting answers, not only refusals.
    for status in (200, 202, 401, 404, 422):
        assert tally.statuses.get(status, 0) > 0, (status, tally.statuses)
    assert not any(s >= 500 for s in tally.statuses), tally.statuses
    print(f"fuzzed {tally.requests} requests in {took_s:.1f}s: {sorted(tally.statuses.items())}")
    # The gateway still answers normally afterwards.
    async with httpx.AsyncClient(base_url=system) as client:
        answer = await client.get(
            "/api/jobs", headers={"Authorization": f"Bearer {token('fuzzer')}"}
        )
        assert answer.status_code == 200
