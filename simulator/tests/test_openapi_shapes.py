"""Every answer the project relies on, checked against Replicate's published OpenAPI description.

The description (`vectors/replicate-openapi.json`) says `openapi: 3.1.0` but writes its schemas in
the 3.0 dialect (`nullable: true` beside a `type`). A 3.1 validator ignores `nullable` and would
reject every `"error": null`, so the validator is `OAS30Validator`.

Its `$ref`s are document-local JSON pointers (`#/components/schemas/...`), and a validator resolves
such a pointer against its root schema. So each schema we check against is wrapped in a root that
carries the document's `components`: `{"$ref": "#/components/schemas/X", "components": ...}` (or
an operation's inline response schema plus the same `components`). That resolves every nested
`$ref` without a `referencing.Registry` and without any remote retrieval.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from jobs_testkit import vectors
from jobs_testkit.receiver import Receiver

from .calls import CREATE, MODEL, VERSION_ID, final, get, parsed, read_until, until_succeeded
from .calls import create as plain_create
from .conftest import RunningSimulator, running_simulator, settings

TOKEN = "r8_sim_test_token"

# The published description, untouched: the defect test below needs it as it is.
PUBLISHED: dict[str, Any] = vectors.load("replicate-openapi.json")


def _patched(doc: dict[str, Any]) -> dict[str, Any]:
    """The description with its one defect mended.

    `schemas_prediction_response.version` is a `oneOf` of "any string" and "the string `hidden`"
    (official models). `hidden` matches both branches, and `oneOf` demands exactly one, so every
    official-model prediction Replicate returns would fail validation
    (`test_the_published_version_one_of_rejects_hidden` shows it). The intent is plainly
    "either", so this copy makes it `anyOf`; nothing else is changed.
    """
    doc = copy.deepcopy(doc)
    version = doc["components"]["schemas"]["schemas_prediction_response"]["properties"]["version"]
    version["anyOf"] = version.pop("oneOf")
    return doc


SPEC = _patched(PUBLISHED)

# `oas30_format_checker` checks `date-time` (the timestamps) but has no `uri` check (that needs an
# optional package); `urls.*` and the list's `next`/`previous` are `format: uri`, so a copy of it
# gets one. (A validator checks formats only when given a checker: `format_checker=` below.)
FORMATS = copy.deepcopy(oas30_format_checker)


@FORMATS.checks("uri")
def _is_absolute_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme in ("http", "https") and parts.netloc)


def validator(schema: dict[str, Any], doc: dict[str, Any] = SPEC) -> Any:
    """An OAS 3.0 validator for `schema`, whose `$ref`s resolve against `doc`'s components."""
    return OAS30Validator({**schema, "components": doc["components"]}, format_checker=FORMATS)


def component(name: str, doc: dict[str, Any] = SPEC) -> Any:
    return validator({"$ref": f"#/components/schemas/{name}"}, doc)


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema the description gives for one answer of one operation."""
    responses = SPEC["paths"][path][method]["responses"]
    schema: dict[str, Any] = responses[str(status)]["content"]["application/json"]["schema"]
    return schema


def request_schema(path: str) -> dict[str, Any]:
    body = SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    schema: dict[str, Any] = body["schema"]
    return schema


PREDICTION = component("schemas_prediction_response")


def assert_valid(schema_validator: Any, instance: object) -> None:
    errors = sorted(schema_validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def assert_prediction(body: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """`body` fits both the operation's own response schema and the shared component."""
    assert_valid(validator(response_schema(path, method, status)), body)
    assert_valid(PREDICTION, body)
    return body


async def create(
    simulator: RunningSimulator,
    webhook: str | None = None,
    events: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A prediction created as `calls.create` does, its answer checked against the description."""
    body = await plain_create(simulator, webhook, events, headers=headers)
    return assert_prediction(body, "/models/{model_owner}/{model_name}/predictions", "post", 201)


# The description itself ---------------------------------------------------------------------


def test_the_published_version_one_of_rejects_hidden() -> None:
    """Why `SPEC` is patched: unpatched, an official model's `"version": "hidden"` is invalid."""
    schema = PUBLISHED["components"]["schemas"]["schemas_prediction_response"]
    assert "oneOf" in schema["properties"]["version"]
    version = validator(schema["properties"]["version"], PUBLISHED)
    errors = list(version.iter_errors("hidden"))
    assert [e.validator for e in errors] == ["oneOf"]
    assert "is valid under each of" in errors[0].message
    # A version id matches one branch only, so the published `oneOf` accepts it ...
    assert list(version.iter_errors(VERSION_ID)) == []
    # ... and the patched `anyOf` accepts both.
    patched = SPEC["components"]["schemas"]["schemas_prediction_response"]["properties"]
    assert list(validator(patched["version"]).iter_errors("hidden")) == []
    assert list(validator(patched["version"]).iter_errors(VERSION_ID)) == []


def test_the_validator_rejects_what_the_description_forbids() -> None:
    """The checks below mean something: nulls, formats, enums and required fields are enforced."""
    good: dict[str, Any] = {
        "id": "p1",
        "model": MODEL,
        "version": "hidden",
        "input": {},
        "output": None,
        "data_removed": False,
        "error": None,
        "status": "starting",
        "created_at": "2025-01-01T00:00:00.000000Z",
        "urls": {
            "get": "http://sim/v1/predictions/p1",
            "cancel": "http://sim/v1/predictions/p1/cancel",
            "web": "http://sim/p/p1",
        },
    }
    assert_valid(PREDICTION, good)
    bad: list[dict[str, Any]] = [
        {**good, "started_at": None},  # not nullable
        {**good, "created_at": "yesterday"},  # not a date-time
        {**good, "status": "queued"},  # not in the enum
        {**good, "urls": {**good["urls"], "get": "/v1/predictions/p1"}},  # not an absolute URI
        {k: v for k, v in good.items() if k != "error"},  # required
    ]
    for body in bad:
        assert not PREDICTION.is_valid(body), body


# Creating --------------------------------------------------------------------------------------


async def test_create_for_a_model_answers_201_with_a_prediction(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=60)
    body = await create(simulator)
    assert body["status"] == "starting"
    assert body["model"] == MODEL
    assert body["version"] == "hidden"
    assert body["urls"]["get"] == f"{simulator.url}/v1/predictions/{body['id']}"


@pytest.mark.parametrize(
    ("version", "model", "version_id"),
    [
        (f"acme/writer:{VERSION_ID}", "acme/writer", VERSION_ID),
        (VERSION_ID, None, VERSION_ID),
        ("acme/writer", "acme/writer", "hidden"),
    ],
    ids=["model-and-version", "bare-version-id", "model-only"],
)
async def test_create_with_a_version_answers_201_with_a_prediction(
    simulator: RunningSimulator, version: str, model: str | None, version_id: str
) -> None:
    await simulator.configure(latencyS=60)
    request = {"version": version, "input": {"prompt": "tides"}}
    assert_valid(validator(request_schema("/predictions")), request)
    response = await simulator.http.post("/v1/predictions", json=request)
    assert response.status_code == 201, response.text
    body = assert_prediction(response.json(), "/predictions", "post", 201)
    assert body["version"] == version_id
    if model is not None:
        assert body["model"] == model


# Reading a prediction in each state -------------------------------------------------------------


async def test_get_in_starting_processing_and_succeeded(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=600)  # starts after 60 s: stays `starting`
    waiting = await create(simulator)
    await simulator.configure(latencyS=6)  # starts after 0.6 s, processing until 6 s
    running = await create(simulator)
    await simulator.configure(latencyS=0.3)
    quick = await create(simulator)

    path = "/predictions/{prediction_id}"
    starting = await get(simulator, waiting["id"])
    assert starting["status"] == "starting"
    assert "started_at" not in starting
    assert "completed_at" not in starting
    assert_prediction(starting, path, "get", 200)

    processing = await read_until(
        lambda: get(simulator, running["id"]), lambda b: b["status"] != "starting", within=15
    )
    assert processing["status"] == "processing"
    assert "started_at" in processing
    assert "completed_at" not in processing
    assert_prediction(processing, path, "get", 200)

    succeeded = await final(simulator, quick["id"], within=15)
    assert succeeded["status"] == "succeeded"
    assert isinstance(succeeded["output"], list)
    assert all(isinstance(chunk, str) for chunk in succeeded["output"])
    assert succeeded["metrics"]["total_time"] > 0
    assert_prediction(succeeded, path, "get", 200)


async def test_a_failed_prediction(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0.2, predictionFailRate=1)
    created = await create(simulator)
    body = await final(simulator, created["id"], within=15)
    assert body["status"] == "failed"
    assert isinstance(body["error"], str)
    assert body["error"]
    assert_prediction(body, "/predictions/{prediction_id}", "get", 200)


async def test_an_aborted_prediction(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0.2, abortRate=1)
    created = await create(simulator)
    body = await final(simulator, created["id"], within=15)
    assert body["status"] == "aborted"
    assert body["output"] is None
    assert "started_at" not in body  # it never started
    assert_prediction(body, "/predictions/{prediction_id}", "get", 200)


async def test_a_prediction_whose_data_was_removed() -> None:
    now = [time.time()]
    async with running_simulator(settings(), clock=lambda: now[0]) as simulator:
        await simulator.configure(latencyS=0)
        created = await create(simulator)
        await final(simulator, created["id"], within=15)
        now[0] += 3600 + 1  # an hour after it ended
        simulator.sim.sweep()
        body = await get(simulator, created["id"])
    assert body["data_removed"] is True
    assert body["status"] == "succeeded"
    assert body["output"] is None
    assert body["input"] == {}
    assert_prediction(body, "/predictions/{prediction_id}", "get", 200)


# Cancel ----------------------------------------------------------------------------------------


async def test_cancel_answers_200_with_the_canceled_prediction(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=60)
    created = await create(simulator)
    response = await simulator.http.post(f"/v1/predictions/{created['id']}/cancel")
    assert response.status_code == 200, response.text
    body = assert_prediction(response.json(), "/predictions/{prediction_id}/cancel", "post", 200)
    assert body["id"] == created["id"]
    assert body["status"] == "canceled"
    assert "completed_at" in body


# List ------------------------------------------------------------------------------------------


async def test_the_list_and_its_next_page(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=0)
    for _ in range(3):
        await asyncio.gather(*(create(simulator) for _ in range(35)))
    inline = validator(response_schema("/predictions", "get", 200))
    paginated = component("schemas_paginated_prediction_response")

    response = await simulator.http.get("/v1/predictions")
    assert response.status_code == 200, response.text
    first = response.json()
    assert_valid(inline, first)
    assert_valid(paginated, first)
    assert len(first["results"]) == 100
    assert first["previous"] is None
    assert first["next"].startswith(f"{simulator.url}/v1/predictions?cursor=")

    response = await simulator.http.get(first["next"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert_valid(inline, second)
    assert_valid(paginated, second)
    assert len(second["results"]) == 5
    assert second["next"] is None
    assert second["previous"].startswith(f"{simulator.url}/v1/predictions?cursor=")


# Webhooks --------------------------------------------------------------------------------------


async def test_the_webhook_signing_secret(simulator: RunningSimulator) -> None:
    response = await simulator.http.get("/v1/webhooks/default/secret")
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid(validator(response_schema("/webhooks/default/secret", "get", 200)), body)
    assert body == {"key": simulator.sim.settings.sim_webhook_secret}


async def test_webhook_bodies_are_predictions(
    simulator: RunningSimulator, receiver: Receiver
) -> None:
    """A webhook body "is the same as the response body of the get prediction operation"."""
    await simulator.configure(latencyS=1.5)
    created = await create(simulator, receiver.url + "?job=j1")
    await until_succeeded(receiver, within=15)
    bodies = received(receiver)
    for body in bodies:
        assert_prediction(body, "/predictions/{prediction_id}", "get", 200)
    assert all(b["id"] == created["id"] for b in bodies)
    # Every body echoes the URL the prediction was created with (the receiver's signed word
    # for which job it serves) and the events it asked for.
    assert all(b["webhook"] == receiver.url + "?job=j1" for b in bodies)
    assert all(b["webhook_events_filter"] == created["webhook_events_filter"] for b in bodies)
    # `start`, at least one `output` or `logs`, then `completed` (in whatever order they landed).
    statuses = sorted(b["status"] for b in bodies)
    assert len(statuses) >= 3
    assert statuses == ["processing"] * (len(statuses) - 1) + ["succeeded"]


@pytest.mark.parametrize(
    ("knobs", "status"),
    [
        ({"predictionFailRate": 1}, "failed"),
        ({"abortRate": 1}, "aborted"),
        ({"latencyS": 60}, "canceled"),
    ],
    ids=["failed", "aborted", "canceled"],
)
async def test_final_webhook_bodies_of_every_ending_are_predictions(
    simulator: RunningSimulator, receiver: Receiver, knobs: dict[str, float], status: str
) -> None:
    await simulator.configure(**{"latencyS": 0.3, **knobs})
    created = await create(simulator, receiver.url, ["completed"])
    if status == "canceled":
        response = await simulator.http.post(f"/v1/predictions/{created['id']}/cancel")
        assert response.status_code == 200, response.text
    await receiver.wait_for(1, within=15)
    (body,) = received(receiver)
    assert body["id"] == created["id"]
    assert body["status"] == status
    assert_prediction(body, "/predictions/{prediction_id}", "get", 200)


def received(receiver: Receiver) -> list[dict[str, Any]]:
    return [parsed(r) for r in receiver.received]


# Request validation ----------------------------------------------------------------------------

GOOD_INPUT = {"prompt": "tides"}


VERSION_ROUTE = "/v1/predictions"
# Bodies each create route must refuse with 422, as its request schema in the description does.
BAD_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    (CREATE, "/models/{model_owner}/{model_name}/predictions", body)
    for body in (
        {"input": GOOD_INPUT, "unknown": 1},
        {"webhook": "https://example.com/hook"},
        {"input": GOOD_INPUT, "webhook_events_filter": ["begin"]},
        {"input": "not an object"},
    )
] + [
    (VERSION_ROUTE, "/predictions", body)
    for body in (
        {"version": VERSION_ID, "input": GOOD_INPUT, "unknown": 1},
        {"version": VERSION_ID},
        {"version": VERSION_ID, "input": GOOD_INPUT, "webhook_events_filter": ["begin"]},
        {"input": GOOD_INPUT},
    )
]
# Headers each create route must refuse: a deadline under 5 s, a `Prefer` that is not `wait[=n]`.
BAD_HEADERS = [
    ("Cancel-After", "2s", 422),
    ("Cancel-After", "4", 422),
    ("Cancel-After", "soon", 422),
    ("Prefer", "wait=0", 400),
    ("Prefer", "wait=100", 400),
    ("Prefer", "wait=", 400),
    ("Prefer", "respond-async", 400),
    # Past Python's 4,300-digit limit for `int`: a 500 before.
    ("Cancel-After", "9" * 5000, 422),
    ("Cancel-After", "1h" + "9" * 5000 + "m", 422),
]


async def test_a_body_the_description_forbids_gets_422(simulator: RunningSimulator) -> None:
    for route, spec_path, body in BAD_BODIES:
        assert not validator(request_schema(spec_path)).is_valid(body), body
        response = await simulator.http.post(route, json=body)
        assert response.status_code == 422, (route, body, response.text)
        assert response.json()["detail"]
    assert simulator.sim.size == 0


async def test_a_bad_header_is_refused(simulator: RunningSimulator) -> None:
    prefer = validator(SPEC["components"]["parameters"]["parameters_prefer_header"]["schema"])
    bodies = {
        CREATE: {"input": GOOD_INPUT},
        VERSION_ROUTE: {"version": VERSION_ID, "input": GOOD_INPUT},
    }
    for header, value, status in BAD_HEADERS:
        if header == "Prefer":  # the description has a pattern for it that refuses these too
            assert not prefer.is_valid(value), value
        for route, body in bodies.items():
            response = await simulator.http.post(route, json=body, headers={header: value})
            assert response.status_code == status, (route, header, value, response.text)
            assert response.json()["detail"]
    assert simulator.sim.size == 0


# Bytes that are not JSON in ways msgspec reported as other errors than `DecodeError`: a
# string holding bytes that are not UTF-8, and nesting past its limit.
UNDECODABLE = [
    b'{"input": {"prompt": "\xff"}}',
    b'{"input": {"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
]


async def test_an_undecodable_body_is_refused_not_a_server_error(
    simulator: RunningSimulator,
) -> None:
    headers = {"Content-Type": "application/json"}
    for route in (CREATE, VERSION_ROUTE):
        for body in UNDECODABLE:
            response = await simulator.http.post(route, content=body, headers=headers)
            assert response.status_code == 422, (route, response.text)
    for body in UNDECODABLE:
        response = await simulator.http.put("/_sim/config", content=body, headers=headers)
        assert response.status_code == 422, response.text
    assert simulator.sim.size == 0


async def test_create_with_prefer_wait_answers_with_the_finished_prediction(
    simulator: RunningSimulator,
) -> None:
    await simulator.configure(latencyS=0.2)
    body = await create(simulator, headers={"Prefer": "wait=10"})
    assert body["status"] == "succeeded"
    assert body["output"]


async def test_a_cancel_after_of_five_seconds_is_accepted(simulator: RunningSimulator) -> None:
    await simulator.configure(latencyS=60)
    body = await create(simulator, headers={"Cancel-After": "5s"})
    assert "deadline" in body


async def test_an_unknown_prediction_is_404(simulator: RunningSimulator) -> None:
    for method, path in [
        ("GET", "/v1/predictions/nosuchprediction"),
        ("POST", "/v1/predictions/nosuchprediction/cancel"),
    ]:
        response = await simulator.http.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"]


async def test_with_an_api_token_only_that_token_is_accepted() -> None:
    async with running_simulator(settings(SIM_API_TOKEN=TOKEN)) as simulator:
        http = simulator.http
        calls = [
            ("POST", CREATE, {"input": GOOD_INPUT}),
            ("POST", "/v1/predictions", {"version": VERSION_ID, "input": GOOD_INPUT}),
            ("GET", "/v1/predictions", None),
            ("GET", "/v1/webhooks/default/secret", None),
        ]
        for method, path, body in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = await http.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
        assert simulator.sim.size == 0

        good = {"Authorization": f"Bearer {TOKEN}"}
        created = await http.post(CREATE, json={"input": GOOD_INPUT}, headers=good)
        assert created.status_code == 201, created.text
        prediction_id = created.json()["id"]
        for path in (f"/v1/predictions/{prediction_id}", f"/v1/predictions/{prediction_id}/cancel"):
            method = "POST" if path.endswith("/cancel") else "GET"
            assert (await http.request(method, path)).status_code == 401
            response = await http.request(method, path, headers=good)
            assert response.status_code == 200, response.text
        for path in ("/v1/predictions", "/v1/webhooks/default/secret"):
            response = await http.get(path, headers=good)
            assert response.status_code == 200, response.text
        response = await http.post(
            "/v1/predictions",
            json={"version": VERSION_ID, "input": GOOD_INPUT},
            headers={"Authorization": f"Token {TOKEN}"},
        )
        assert response.status_code == 201, response.text
