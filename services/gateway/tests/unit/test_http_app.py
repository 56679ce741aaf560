"""The HTTP app in process over fake ports: the OpenAPI document is valid 3.1, describes
exactly the app's `/api` routes and every status (and body) they answer; `/docs` points at
it; CORS answers preflights for configured origins only; no token reaches a log line; the
event routes take a stream slot and give it back whatever they answer."""

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]  # no stubs in the workspace
import jwt
import pytest
from starlette.routing import Route

import gateway
from gateway.adapters.http import IDEATION_ROUTES, GatewayPorts, build_app
from gateway.auth import TokenVerifier
from gateway.budgets import Spending
from gateway.cache import FinishedJobs
from gateway.limits import LimitExceeded, RequestRate
from gateway.streams import OpenStreams
from jobs_runtime.logs import JsonFormatter

from ..fakes import FakeJobSystem, RecordingObserver

SECRET = "unit-test-secret-0123456789abcdef0123"
MAX_BODY_BYTES = 512
ALLOWED_ORIGIN = "https://app.example"
PROBLEM = "application/problem+json"


def token(sub: str = "alice", **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 300), **claims}, SECRET, "HS256")


@dataclass
class Fakes(FakeJobSystem):
    """The job system, and the request rate the app is built with (a generous one: see
    `exhaust`)."""

    rate: RequestRate = field(default_factory=lambda: RequestRate(0.001, 1000))
    observer: RecordingObserver = field(default_factory=RecordingObserver)

    def exhaust(self, user_id: str) -> None:
        """Use up `user_id`'s requests: their next one is `429`."""
        for _ in range(10_000):
            try:
                self.rate.take(user_id)
            except LimitExceeded:
                return
        raise AssertionError("the rate never ran out")


def make_client(
    fakes: Fakes, cors_origins: tuple[str, ...] = (), streams: OpenStreams | None = None
) -> httpx.AsyncClient:
    ports = GatewayPorts(
        verifier=TokenVerifier([SECRET]),
        bus=fakes.stream,
        store=fakes.store,
        requested=fakes.stream,
        max_body_bytes=MAX_BODY_BYTES,
        clock=lambda: datetime(2030, 1, 2, tzinfo=UTC),
        cors_origins=cors_origins,
        keys=fakes.keys,
        rate=fakes.rate,
        finished=FinishedJobs(1024 * 1024),
        streams=streams or OpenStreams(),
        # No budget configured: only a token's budget claim makes admission reserve.
        spending=Spending(fakes.budgets),
        observer=fakes.observer,
    )
    # `raise_app_exceptions=False`: a 500 is an answer under test, not a test failure.
    transport = httpx.ASGITransport(build_app(ports), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test")


@pytest.fixture
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture
async def client(fakes: Fakes) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(fakes) as client:
        yield client


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")  # no token: the document is public
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def app_routes(client: httpx.AsyncClient) -> list[Any]:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    routes: list[Any] = transport.app.routes  # type: ignore[attr-defined]
    return routes


def template(path: str) -> str:
    """A path with its parameters unnamed: the app says `{job_id}`, the document `{jobId}`."""
    return re.sub(r"\{[^}]+\}", "{}", path)


# --- the document is OpenAPI 3.1 --------------------------------------------------------------

# `openapi_spec_validator` is not in the workspace; this is the part of the OpenAPI 3.1
# schema the gateway's document uses, checked with `jsonschema`, plus every schema object
# checked as JSON Schema 2020-12 and every `$ref` resolved below.
_REF = {"type": "object", "required": ["$ref"], "properties": {"$ref": {"type": "string"}}}
_MEDIA = {
    "type": "object",
    "required": ["schema"],
    "properties": {"schema": {"type": "object"}},
}
_HEADER = {
    "type": "object",
    "required": ["schema"],
    "properties": {"description": {"type": "string"}, "schema": {"type": "object"}},
    "additionalProperties": False,
}
_RESPONSE = {
    "type": "object",
    "required": ["description"],
    "properties": {
        "description": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": _HEADER},
        "content": {"type": "object", "additionalProperties": _MEDIA},
    },
    "additionalProperties": False,
}
_PARAMETER = {
    "type": "object",
    "required": ["name", "in", "schema"],
    "properties": {
        "name": {"type": "string"},
        "in": {"enum": ["query", "header", "path", "cookie"]},
        "required": {"type": "boolean"},
        "description": {"type": "string"},
        "schema": {"type": "object"},
    },
    "if": {"properties": {"in": {"const": "path"}}},
    "then": {"required": ["required"], "properties": {"required": {"const": True}}},
    "additionalProperties": False,
}
_OPERATION = {
    "type": "object",
    "required": ["responses", "operationId"],
    "properties": {
        "summary": {"type": "string"},
        "description": {"type": "string"},
        # One style for every operation: camelCase, as a generated client names its methods.
        "operationId": {"type": "string", "pattern": "^[a-z]+([A-Z][a-z]*)*$"},
        "security": {"type": "array", "items": {"type": "object"}},
        "parameters": {"type": "array", "items": _PARAMETER},
        "requestBody": {
            "type": "object",
            "required": ["content"],
            "properties": {
                "required": {"type": "boolean"},
                "content": {"type": "object", "additionalProperties": _MEDIA},
            },
            "additionalProperties": False,
        },
        "responses": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[1-5][0-9]{2}$"},
            "additionalProperties": {"oneOf": [_RESPONSE, _REF]},
        },
    },
    "additionalProperties": False,
}
OPENAPI_31_ESSENTIALS = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["openapi", "info", "servers", "paths", "components"],
    "properties": {
        "openapi": {"type": "string", "pattern": r"^3\.1\.\d+$"},
        # Relative: the gateway that serves the document.
        "servers": {"const": [{"url": "/"}]},
        "info": {
            "type": "object",
            "required": ["title", "version"],
            "properties": {"title": {"type": "string"}, "version": {"type": "string"}},
        },
        "paths": {
            "type": "object",
            "propertyNames": {"pattern": "^/"},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"enum": ["get", "put", "post", "delete", "patch"]},
                "additionalProperties": _OPERATION,
            },
        },
        "components": {
            "type": "object",
            "properties": {
                "schemas": {"type": "object", "additionalProperties": {"type": "object"}},
                "securitySchemes": {"type": "object"},
            },
        },
    },
}


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


async def test_the_document_is_openapi_31(document: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(OPENAPI_31_ESSENTIALS).validate(document)
    schemas = document["components"]["schemas"]
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)  # raises naming what is wrong
    for ref in set(_refs(document)):
        prefix = "#/components/schemas/"
        assert ref.startswith(prefix), ref
        assert ref.removeprefix(prefix) in schemas, ref
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for path, item in document["paths"].items():
        for operation in item.values():
            # Every API route but the job types' checks a token (the event routes also take it
            # in the query, for `EventSource`, and a job's read a job token there), and its
            # path parameters are all declared.
            security: list[dict[str, list[str]]] = [{"bearerAuth": []}]
            if path.endswith(("events", "output")) or path == "/api/jobs/{jobId}":
                security.append({"accessToken": []})
            if path == "/api/job-types":
                security = []
            assert operation["security"] == security, path
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == set(re.findall(r"\{([^}]+)\}", path)), path


async def test_the_422_errors_shape_is_described(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    errors = schemas["Problem"]["properties"]["errors"]["anyOf"][0]
    assert errors == {"type": "array", "items": {"$ref": "#/components/schemas/ProblemDetail"}}
    assert set(schemas["ProblemDetail"]["properties"]) == {"pointer", "parameter", "detail"}
    assert set(schemas["Problem"]["required"]) == {"type", "title", "status", "detail"}
    # Each job type's input is a component, straight from its msgspec Struct.
    for name in ("ScriptGenerationInput", "VideoOutlineInput", "TitleGenerationInput"):
        assert schemas[name]["required"] == ["topic"]


async def test_the_document_names_exactly_the_apps_api_routes(
    client: httpx.AsyncClient, document: dict[str, Any]
) -> None:
    in_app = {
        (template(route.path), method.lower())
        for route in app_routes(client)
        if isinstance(route, Route) and "/api" in route.path
        for method in route.methods or ()
        if method != "HEAD"  # Starlette's implicit HEAD of every GET
    }
    in_document = {
        (template(path), method) for path, item in document["paths"].items() for method in item
    }
    assert in_app == in_document
    ideation = {template(p) for p in IDEATION_ROUTES}
    assert ideation <= {path for path, _ in in_document}


# --- every status the app answers is declared, with the body it has -------------------------


async def observe(client: httpx.AsyncClient, fakes: Fakes) -> list[tuple[str, str, Any]]:
    """Drive every route into every answer it has; (method, path template, response)."""
    auth = {"Authorization": f"Bearer {token()}"}
    fakes.exhaust("greedy")
    greedy = {"Authorization": f"Bearer {token('greedy')}"}
    # A budget of nothing, from the token: every create is past it.
    broke = {"Authorization": f"Bearer {token('broke', budget_usd=0)}"}
    seen: list[tuple[str, str, Any]] = []
    creates = [("/api/jobs", {"type": "title_generation", "input": {"topic": "tides"}})]
    creates += [(path, {"topic": "tides"}) for path in IDEATION_ROUTES]
    for path, good in creates:
        other = {**good, "topic": "other"} if "topic" in good else {**good, "type": "video_outline"}
        fakes.down = fakes.broken = False
        answers = [
            await client.post(path, json=good, headers=auth),
            await client.post(path, json=good),
            await client.post(path, content=b"{}", headers={**auth, "Content-Type": "text/plain"}),
            await client.post(path, json={"x": "y" * MAX_BODY_BYTES}, headers=auth),
            await client.post(
                path, content=b"{", headers={**auth, "Content-Type": "application/json"}
            ),
            await client.post(path, json={"type": "nope", "topic": ""}, headers=auth),
        ]
        keyed = {**auth, "Idempotency-Key": f"key-{path}"}
        answers += [
            await client.post(path, json=good, headers=keyed),
            await client.post(path, json=good, headers=keyed),  # the first answer again
            await client.post(path, json=other, headers=keyed),
            await client.post(path, json=good, headers={**auth, "Idempotency-Key": "k" * 256}),
            await client.post(path, json=good, headers=greedy),
            await client.post(path, json=good, headers=broke),
        ]
        fakes.down = True
        answers.append(await client.post(path, json=good, headers=auth))
        fakes.down, fakes.broken = False, True
        answers.append(await client.post(path, json=good, headers=auth))
        seen += [("post", path, a) for a in answers]
    fakes.down = fakes.broken = False
    job = await client.post("/api/jobs", json=creates[0][1], headers=auth)
    assert job.status_code == 202
    location = job.headers["location"]
    tag = (await client.get(location, headers=auth)).headers["etag"]
    answers = [
        await client.get(location, headers=auth),
        await client.get(location, headers={**auth, "If-None-Match": tag}),
        await client.get(location),
        await client.get(location, headers={"Authorization": f"Bearer {token('bob')}"}),
        await client.get("/api/jobs/not-a-uuid", headers=auth),
        await client.get(location, headers=greedy),
    ]
    fakes.down = True
    answers.append(await client.get(location, headers=auth))
    fakes.down, fakes.broken = False, True
    answers.append(await client.get(location, headers=auth))
    seen += [("get", "/api/jobs/{jobId}", a) for a in answers]

    fakes.down = fakes.broken = False
    answers = [
        await client.get("/api/jobs", headers=auth),
        await client.get("/api/jobs"),
        await client.get("/api/jobs?cursor=bad", headers=auth),
        await client.get("/api/jobs?limit=0&status=done", headers=auth),
        await client.get("/api/jobs", headers=greedy),
    ]
    fakes.down = True
    answers.append(await client.get("/api/jobs", headers=auth))
    fakes.down, fakes.broken = False, True
    answers.append(await client.get("/api/jobs", headers=auth))
    seen += [("get", "/api/jobs", a) for a in answers]

    fakes.down = fakes.broken = False
    history = f"{location}/history"
    answers = [
        await client.get(history, headers=auth),
        await client.get(history),
        await client.get(history, headers={"Authorization": f"Bearer {token('bob')}"}),
        await client.get("/api/jobs/not-a-uuid/history", headers=auth),
        await client.get(f"{history}?cursor=bad", headers=auth),
        await client.get(f"{history}?limit=1001", headers=auth),
        await client.get(history, headers=greedy),
    ]
    fakes.down = True
    answers.append(await client.get(history, headers=auth))
    fakes.down, fakes.broken = False, True
    answers.append(await client.get(history, headers=auth))
    seen += [("get", "/api/jobs/{jobId}/history", a) for a in answers]

    fakes.down = fakes.broken = False
    done = await client.post("/api/jobs", json=creates[0][1], headers=auth)
    fakes.store.statuses[uuid.UUID(done.json()["jobId"])] = "succeeded"
    cancel = f"{location}/cancel"
    answers = [
        await client.post(cancel, headers=auth),
        await client.post(cancel),
        await client.post(cancel, headers={"Authorization": f"Bearer {token('bob')}"}),
        await client.post("/api/jobs/not-a-uuid/cancel", headers=auth),
        await client.post(f"{done.headers['location']}/cancel", headers=auth),
        await client.post(cancel, headers=greedy),
    ]
    fakes.down = True
    answers.append(await client.post(cancel, headers=auth))
    fakes.down, fakes.broken = False, True
    answers.append(await client.post(cancel, headers=auth))
    seen += [("post", "/api/jobs/{jobId}/cancel", a) for a in answers]

    fakes.down = fakes.broken = False
    answers = [
        await client.get("/api/usage", headers=auth),
        await client.get("/api/usage?from=2030-01-01&to=2030-01-31", headers=broke),
        await client.get("/api/usage"),
        await client.get("/api/usage?from=2030-02-30", headers=auth),
        await client.get("/api/usage", headers=greedy),
    ]
    fakes.down = True
    answers.append(await client.get("/api/usage", headers=auth))
    fakes.down, fakes.broken = False, True
    answers.append(await client.get("/api/usage", headers=auth))
    seen += [("get", "/api/usage", a) for a in answers]
    fakes.down = fakes.broken = False
    seen.append(("get", "/api/job-types", await client.get("/api/job-types")))
    return seen


async def test_every_answer_is_declared_with_its_body(
    client: httpx.AsyncClient,
    fakes: Fakes,
    document: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL)  # the 500s log their tracebacks on purpose
    seen = await observe(client, fakes)
    statuses: dict[tuple[str, str], set[int]] = {}
    for method, path, response in seen:
        statuses.setdefault((method, path), set()).add(response.status_code)
        declared = document["paths"][path][method]["responses"]
        status = str(response.status_code)
        assert status in declared, (method, path, status)
        answer = declared[status]
        for header in answer.get("headers", {}):
            assert header.lower() in response.headers, (method, path, status, header)
        if "content" not in answer:
            assert not response.content
            continue
        media_type = response.headers["content-type"]
        assert media_type in answer["content"], (method, path, status, media_type)
        schema = {**answer["content"][media_type]["schema"], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(response.json())
    # The run did reach every answer of the contract that exists today.
    creates = {202, 400, 401, 402, 409, 413, 415, 422, 429, 500, 503}
    assert statuses[("post", "/api/jobs")] == creates
    assert all(statuses[("post", p)] == creates for p in IDEATION_ROUTES)
    assert statuses[("get", "/api/jobs/{jobId}")] == {200, 304, 401, 404, 429, 500, 503}
    assert statuses[("get", "/api/jobs")] == {200, 400, 401, 422, 429, 500, 503}
    history = {200, 400, 401, 404, 422, 429, 500, 503}
    assert statuses[("get", "/api/jobs/{jobId}/history")] == history
    assert statuses[("post", "/api/jobs/{jobId}/cancel")] == {202, 401, 404, 409, 429, 500, 503}
    assert statuses[("get", "/api/usage")] == {200, 401, 422, 429, 500, 503}
    assert statuses[("get", "/api/job-types")] == {200}


async def test_every_answer_of_the_job_event_route_is_declared(
    client: httpx.AsyncClient, fakes: Fakes, document: dict[str, Any]
) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    fakes.exhaust("greedy")
    created = await client.post(
        "/api/jobs", json={"type": "title_generation", "input": {"topic": "t"}}, headers=auth
    )
    job_id = created.json()["jobId"]
    # Terminal, so the stream ends after its one state (the in-process client reads it all).
    fakes.store.statuses[uuid.UUID(job_id)] = "succeeded"
    url = f"/api/jobs/{job_id}/events"
    answers = {
        200: await client.get(url, headers=auth),
        204: await client.get(url, headers={**auth, "Last-Event-ID": "1"}),
        401: await client.get(url),
        404: await client.get(url, headers={"Authorization": f"Bearer {token('bob')}"}),
        429: await client.get(url, headers={"Authorization": f"Bearer {token('greedy')}"}),
    }
    fakes.down = True
    answers[503] = await client.get(url, headers=auth)
    declared = document["paths"]["/api/jobs/{jobId}/events"]["get"]["responses"]
    for status, response in answers.items():
        assert response.status_code == status, (status, response.text)
        answer = declared[str(status)]
        media_type = response.headers.get("content-type", "").split(";")[0]
        if "content" in answer:
            assert media_type in answer["content"], (status, media_type)
        else:
            assert not response.content
    assert answers[200].text.startswith("event: status\nid: 1\ndata: {")
    assert answers[200].text.count("event:") == 1


async def test_an_idempotent_replay_is_the_first_answer(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    auth = {"Authorization": f"Bearer {token()}", "Idempotency-Key": "order-7"}
    body = {"type": "title_generation", "input": {"topic": "tides", "count": 3}}
    first = await client.post("/api/jobs", json=body, headers=auth)
    # The same body spelled differently is the same request.
    again = await client.post(
        "/api/jobs",
        content=b'{ "input": {"count": 3, "topic": "tides"}, "type": "title_generation" }',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.content == first.content
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len(fakes.published) == 1
    # The key is per user: bob's `order-7` is a job of his own.
    bob = await client.post(
        "/api/jobs",
        json=body,
        headers={"Authorization": f"Bearer {token('bob')}", "Idempotency-Key": "order-7"},
    )
    assert bob.status_code == 202
    assert bob.json()["jobId"] != first.json()["jobId"]
    conflict = await client.post("/api/jobs", json={**body, "type": "video_outline"}, headers=auth)
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:ai-jobs:problem:idempotency-key-reused"
    assert len(fakes.published) == 2


async def test_what_the_metrics_count_is_told_to_the_observer(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    auth = {"Authorization": f"Bearer {token()}", "Idempotency-Key": "order-8"}
    body = {"type": "title_generation", "input": {"topic": "tides"}}
    created = await client.post("/api/jobs", json=body, headers=auth)
    await client.post("/api/jobs", json=body, headers=auth)
    await client.post("/api/jobs", json={**body, "type": "video_outline"}, headers=auth)
    await client.get(created.headers["location"], headers=auth)
    fakes.exhaust("greedy")
    await client.get("/api/jobs", headers={"Authorization": f"Bearer {token('greedy')}"})
    assert fakes.observer.facts == [
        ("job_admitted", "title_generation"),
        ("idempotent_replay",),
        ("idempotency_conflict", "reused"),
        ("job_read", "job_store"),
        ("limited", "rate"),
    ]


async def test_the_rate_is_checked_right_after_the_token(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.exhaust("greedy")
    # Even a request that would be `415` is `429` first; without a token it is `401`.
    response = await client.post(
        "/api/jobs",
        content=b"x",
        headers={"Authorization": f"Bearer {token('greedy')}", "Content-Type": "text/plain"},
    )
    assert response.status_code == 429
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["type"] == "urn:ai-jobs:problem:too-many-requests"
    assert (await client.post("/api/jobs", content=b"x")).status_code == 401
    assert fakes.published == []


async def test_a_finished_job_is_answered_from_memory_for_its_owner_only(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    body = {"type": "title_generation", "input": {"topic": "tides"}}
    created = await client.post("/api/jobs", json=body, headers=auth)
    job_id = uuid.UUID(created.json()["jobId"])
    location = created.headers["location"]
    # Not finished yet: every read asks the job-store.
    await client.get(location, headers=auth)
    await client.get(location, headers=auth)
    assert len(fakes.store.asked) == 2
    fakes.store.statuses[job_id] = "succeeded"
    first = await client.get(location, headers=auth)
    assert first.json()["status"] == "succeeded"
    assert len(fakes.store.asked) == 3
    # From now on the job-store is not asked, even while it is down.
    fakes.down = True
    again = await client.get(location, headers=auth)
    assert (again.status_code, again.content) == (200, first.content)
    assert again.headers["etag"] == first.headers["etag"]
    unchanged = await client.get(location, headers={**auth, "If-None-Match": first.headers["etag"]})
    assert unchanged.status_code == 304
    assert unchanged.headers["etag"] == first.headers["etag"]
    other = await client.get(location, headers={"Authorization": f"Bearer {token('bob')}"})
    assert other.status_code == 404
    assert len(fakes.store.asked) == 3


async def test_the_lean_path_answers_as_the_route_does(fakes: Fakes) -> None:
    """A read answered from memory goes the lean path (`fast.py`), except a CORS request,
    which the route answers: both answers are the same but for the CORS headers."""
    origin = "https://app.example"
    auth = {"Authorization": f"Bearer {token()}"}
    async with make_client(fakes, cors_origins=(origin,)) as client:
        body = {"type": "title_generation", "input": {"topic": "tides"}}
        created = await client.post("/api/jobs", json=body, headers=auth)
        fakes.store.statuses[uuid.UUID(created.json()["jobId"])] = "succeeded"
        location = created.headers["location"]
        await client.get(location, headers=auth)  # asks the job-store, keeps the answer
        for extra in ({}, {"If-None-Match": '"other", W/"x"'}):
            lean = await client.get(location, headers={**auth, **extra})
            routed = await client.get(location, headers={**auth, **extra, "Origin": origin})
            assert routed.headers["access-control-allow-origin"] == origin
            cors = {k for k in routed.headers if k.startswith("access-control-") or k == "vary"}
            assert (lean.status_code, lean.content) == (routed.status_code, routed.content)
            assert dict(lean.headers) == {k: v for k, v in routed.headers.items() if k not in cors}
        tag = lean.headers["etag"]
        lean = await client.get(location, headers={**auth, "If-None-Match": tag})
        routed = await client.get(
            location, headers={**auth, "If-None-Match": tag, "Origin": origin}
        )
        assert lean.status_code == routed.status_code == 304
        assert lean.headers["etag"] == routed.headers["etag"] == tag
        # A bad token is the route's to refuse, with its challenge.
        refused = await client.get(location, headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")


async def test_the_lean_admission_answers_as_the_route_does(fakes: Fakes) -> None:
    """A create without `Idempotency-Key` goes the lean path (`fast_admit.py`), a CORS one
    the route: the same answers but for the CORS headers and the new job's id; a request the
    lean path hands on after reading its body is answered by the route, counted once."""
    origin = "https://app.example"
    auth = {"Authorization": f"Bearer {token()}"}
    fakes.rate = RequestRate(0.001, 4)
    async with make_client(fakes, cors_origins=(origin,)) as client:
        body = {"type": "title_generation", "input": {"topic": "tides"}}
        bad = {"type": "title_generation", "input": {"topic": ""}}
        invalid = await client.post("/api/jobs", json=bad, headers=auth)
        lean = await client.post("/api/jobs", json=body, headers=auth)
        routed = await client.post("/api/jobs", json=body, headers={**auth, "Origin": origin})
        assert invalid.status_code == 422
        assert invalid.json()["errors"][0]["pointer"] == "/input/topic"
        assert lean.status_code == routed.status_code == 202
        cors = {k for k in routed.headers if k.startswith("access-control-") or k == "vary"}
        assert set(lean.headers) == set(routed.headers) - cors
        assert lean.headers["content-type"] == routed.headers["content-type"]
        assert lean.json()["status"] == routed.json()["status"] == "pending"
        assert lean.headers["location"] == f"/api/jobs/{lean.json()['jobId']}"
        # Three requests counted of four: one more, then the rate refuses.
        assert (await client.post("/api/jobs", json=body, headers=auth)).status_code == 202
        refused = await client.post("/api/jobs", json=body, headers=auth)
        assert refused.status_code == 429
        assert "retry-after" in refused.headers


class PageParts(HTMLParser):
    """What a page would need a Content-Security-Policy to allow: its scripts, inline code and
    styles, event handler attributes, and the addresses it loads."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []
        self._in_inline_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.loads.append(attributes["src"] or "")
            else:
                self._in_inline_script = True
        if tag == "style":
            self.inline.append("<style>")
        if tag == "link":
            self.loads.append(attributes.get("href") or "")
        self.inline += [
            f"{name}=" for name in attributes if name == "style" or name.startswith("on")
        ]

    def handle_data(self, data: str) -> None:
        if self._in_inline_script and data.strip():
            self.inline.append(f"<script>{data.strip()[:40]}")

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = False


def assert_strict_page(response: httpx.Response) -> PageParts:
    """The page carries the strict policy, and nothing on it needs more than the policy allows:
    no inline script or style, no handler attributes, nothing loaded from another origin."""
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    directives = response.headers["content-security-policy"].split(";")
    policy = dict(d.strip().partition(" ")[::2] for d in directives)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    parts = PageParts(response.text)
    assert parts.inline == []
    for address in parts.loads:
        assert address.startswith("/"), address
        assert not address.startswith("//"), address
    return parts


async def test_docs_render_the_document_without_a_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    parts = assert_strict_page(response)
    assert 'data-url="/openapi.json"' in response.text
    # Swagger UI comes from the gateway itself, the vendored files unchanged.
    static = Path(gateway.__file__).parent / "static"
    expected = {
        "/docs/assets/swagger-ui-bundle.js": (
            static / "swagger-ui" / "swagger-ui-bundle.js",
            "text/javascript",
        ),
        "/docs/assets/swagger-ui.css": (static / "swagger-ui" / "swagger-ui.css", "text/css"),
        "/docs/assets/docs.js": (static / "docs.js", "text/javascript"),
    }
    assert sorted(parts.loads) == sorted(expected)
    for address, (file, media_type) in expected.items():
        asset = await client.get(address)
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media_type)
        assert asset.content == file.read_bytes()
    assert "SwaggerUIBundle" in (await client.get("/docs/assets/docs.js")).text
    # Its licence travels with it.
    assert "Apache License" in (static / "swagger-ui" / "LICENSE").read_text()


async def test_the_demo_page_and_its_client_are_served_only_when_on(fakes: Fakes) -> None:
    async with make_client(fakes) as off:
        assert (await off.get("/")).status_code == 404
        assert (await off.get("/demo/jobs-client.js")).status_code == 404
    ports = GatewayPorts(
        verifier=TokenVerifier([SECRET]),
        bus=fakes.stream,
        store=fakes.store,
        requested=fakes.stream,
        max_body_bytes=MAX_BODY_BYTES,
        demo_page=True,
    )
    transport = httpx.ASGITransport(build_app(ports))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as on:
        page = await on.get("/")  # no token: the page asks for one
        parts = assert_strict_page(page)
        assert sorted(parts.loads) == ["/demo/demo.css", "/demo/demo.js"]
        script = await on.get("/demo/demo.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert 'from "/demo/jobs-client.js"' in script.text
        style = await on.get("/demo/demo.css")
        assert style.headers["content-type"].startswith("text/css")
        client = await on.get("/demo/jobs-client.js")
        assert client.status_code == 200
        assert client.headers["content-type"].startswith("text/javascript")
        assert "export class JobsClient" in client.text


# --- CORS --------------------------------------------------------------------------------------


async def preflight(client: httpx.AsyncClient, origin: str) -> Any:
    return await client.options(
        "/api/jobs",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )


async def test_a_preflight_from_an_allowed_origin_is_answered(fakes: Fakes) -> None:
    async with make_client(fakes, cors_origins=(ALLOWED_ORIGIN,)) as client:
        response = await preflight(client, ALLOWED_ORIGIN)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        allowed = response.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "content-type", "idempotency-key", "if-none-match"):
            assert header in allowed
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "access-control-allow-credentials" not in response.headers

        # The real request then exposes the headers a page needs to read.
        answer = await client.post(
            "/api/jobs",
            json={"type": "title_generation", "input": {"topic": "tides"}},
            headers={"Origin": ALLOWED_ORIGIN, "Authorization": f"Bearer {token()}"},
        )
        assert answer.status_code == 202
        assert answer.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        exposed = {
            h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")
        }
        assert {"location", "etag", "retry-after"} <= exposed


async def test_a_preflight_from_another_origin_is_refused(fakes: Fakes) -> None:
    async with make_client(fakes, cors_origins=(ALLOWED_ORIGIN,)) as client:
        response = await preflight(client, "https://evil.example")
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        answer = await client.get("/openapi.json", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in answer.headers


async def test_without_configured_origins_there_is_no_cors(client: httpx.AsyncClient) -> None:
    response = await preflight(client, ALLOWED_ORIGIN)
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert "access-control-allow-origin" not in response.headers


# --- access logs ---------------------------------------------------------------------------------


async def test_no_token_is_ever_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = token()
    bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.SECRETSIGNATUREVALUE"
    query = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJxdWVyeSJ9.QUERYSECRETVALUE"
    body = {"type": "title_generation", "input": {"topic": "tides"}}
    await client.post("/api/jobs", json=body, headers={"Authorization": f"Bearer {good}"})
    await client.post(
        f"/api/jobs?access_token={query}", json=body, headers={"Authorization": f"Bearer {good}"}
    )
    await client.post("/api/jobs", json=body, headers={"Authorization": f"Bearer {bad}"})
    await client.post("/api/jobs", json=body, headers={"Authorization": bad})
    await client.get(
        f"/api/jobs/{uuid.uuid4()}?access_token={query}", headers={"Authorization": f"Bearer {bad}"}
    )
    await client.get(f"/api/nowhere?access_token={query}")
    await client.delete(f"/api/jobs?access_token={query}")
    # The event routes take it from the query: a bad one is refused, a good one used.
    await client.get(f"/api/jobs/{uuid.uuid4()}/events?access_token={query}")
    await client.get(f"/api/jobs/{uuid.uuid4()}/events?access_token={good}")
    requests = [r for r in caplog.records if r.getMessage() == "request"]
    assert len(requests) == 9
    assert [r.status for r in requests[-2:]] == [401, 404]  # type: ignore[attr-defined]
    formatter = JsonFormatter("gateway")
    # httpx's records are this test's client logging its own URLs, not the gateway.
    for record in (r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))):
        # The line as it is written, and every attribute a handler could pick up.
        written = formatter.format(record) + repr(vars(record))
        for secret in (
            good,
            bad,
            query,
            "SECRETSIGNATUREVALUE",
            "QUERYSECRETVALUE",
            "access_token",
        ):
            assert secret not in written, written


async def test_an_event_route_gives_its_stream_slot_back_whatever_it_answers(fakes: Fakes) -> None:
    streams = OpenStreams(per_user=1, in_all=2)
    auth = {"Authorization": f"Bearer {token()}"}
    async with make_client(fakes, streams=streams) as client:
        created = await client.post(
            "/api/jobs", json={"type": "title_generation", "input": {"topic": "t"}}, headers=auth
        )
        job_id = created.json()["jobId"]
        fakes.store.statuses[uuid.UUID(job_id)] = "succeeded"
        url = f"/api/jobs/{job_id}/events"
        # With one stream allowed, each of these would be refused if the one before had kept
        # its slot: a stream that ended after the terminal state, a 204, a 404, a 503.
        assert (await client.get(url, headers=auth)).status_code == 200
        assert (await client.get(url, headers={**auth, "Last-Event-ID": "1"})).status_code == 204
        unknown = f"/api/jobs/{uuid.uuid4()}/events"
        assert (await client.get(unknown, headers=auth)).status_code == 404
        fakes.down = True
        assert (await client.get(url, headers=auth)).status_code == 503
        fakes.down = False
        assert (await client.get(url, headers=auth)).status_code == 200
    assert streams.open == 0


async def test_the_stream_caps_refuse_before_the_job_store_is_asked(fakes: Fakes) -> None:
    streams = OpenStreams(per_user=1, in_all=2)
    held = [streams.take("alice"), streams.take("bob")]
    async with make_client(fakes, streams=streams) as client:
        job_events = f"/api/jobs/{uuid.uuid4()}/events"
        for path in (job_events, "/api/events"):
            mine = await client.get(path, headers={"Authorization": f"Bearer {token()}"})
            assert mine.status_code == 429, mine.text
            assert mine.headers["content-type"] == PROBLEM
            assert mine.json()["type"] == "urn:ai-jobs:problem:too-many-requests"
            assert int(mine.headers["retry-after"]) >= 1

            full = await client.get(path, headers={"Authorization": f"Bearer {token('carol')}"})
            assert full.status_code == 503, full.text
            assert full.headers["content-type"] == PROBLEM
            assert full.json()["type"] == "urn:ai-jobs:problem:streams-full"
            assert int(full.headers["retry-after"]) >= 1
    assert fakes.store.asked == []
    assert streams.open == 2
    for slot in held:
        slot.close()


async def test_a_history_is_private_and_checked_in_the_reads_order(
    client: httpx.AsyncClient, fakes: Fakes
) -> None:
    auth = {"Authorization": f"Bearer {token()}"}
    body = {"type": "title_generation", "input": {"topic": "tides"}}
    history = (
        f"{(await client.post('/api/jobs', json=body, headers=auth)).headers['location']}/history"
    )
    page = await client.get(history, headers=auth)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "private, no-store"
    assert [e["kind"] for e in page.json()["entries"]] == ["requested"]
    assert (page.json()["truncated"], page.json()["nextCursor"]) == (False, None)
    # 401 before anything; 429 before the job id, the query or the job-store are looked at.
    fakes.exhaust("greedy")
    greedy = {"Authorization": f"Bearer {token('greedy')}"}
    assert (await client.get("/api/jobs/x/history?limit=0")).status_code == 401
    assert (await client.get("/api/jobs/x/history?limit=0", headers=greedy)).status_code == 429
    assert (await client.get("/api/jobs/x/history?limit=0", headers=auth)).status_code == 404
    refused = await client.get(f"{history}?limit=0&cursor=a&cursor=b", headers=auth)
    assert refused.status_code == 422
    assert [e["parameter"] for e in refused.json()["errors"]] == ["limit", "cursor"]
    asked = len(fakes.store.histories_asked)
    bad = await client.get(f"{history}?cursor=zzz", headers=auth)
    assert bad.status_code == 400
    assert bad.json()["type"].endswith("invalid-cursor")
    assert len(fakes.store.histories_asked) == asked + 1
