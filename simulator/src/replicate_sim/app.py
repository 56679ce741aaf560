"""The HTTP face of the simulator: Replicate's `/v1` routes and the `/_sim` control routes."""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from jobs_proto.wire import decode_json
from jobs_runtime.web import EscapedQueryString
from replicate_sim.engine import CursorError, Simulator
from replicate_sim.model import Prediction, WebhookEvent
from replicate_sim.streams import quiet_cuts, serve

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

# Matched whole (`fullmatch`: `$` would allow a trailing newline), ASCII digits only and few
# enough of them that `int` stays cheap and within Python's digit limit.
_PREFER = re.compile(r"wait(=([1-9]|[1-9][0-9]|60))?")
_DURATION = re.compile(r"(?:(?P<h>[0-9]{1,6})h)?(?:(?P<m>[0-9]{1,6})m)?(?:(?P<s>[0-9]{1,9})s?)?")
MIN_CANCEL_AFTER_S = 5


class ModelPredictionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of `POST /v1/models/{owner}/{name}/predictions` (OpenAPI: no other fields)."""

    input: dict[str, Any]
    webhook: str | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    stream: bool | None = None
    # Sent by older versions of the `replicate` client; accepted and ignored.
    webhook_completed: str | None = None


class VersionPredictionRequest(ModelPredictionRequest, forbid_unknown_fields=True):
    """Body of `POST /v1/predictions`."""

    version: str


_MODEL_REQUEST = msgspec.json.Decoder(ModelPredictionRequest)
_VERSION_REQUEST = msgspec.json.Decoder(VersionPredictionRequest)


def problem(status: int, title: str, detail: str, **headers: str) -> Response:
    body = {"title": title, "detail": detail, "status": status}
    return Response(
        msgspec.json.encode(body),
        status,
        headers=headers,
        media_type="application/problem+json",
    )


def json_response(body: object, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status, media_type="application/json")


def parse_duration(value: str) -> float | None:
    """`Cancel-After` as Replicate reads it: `90`, `90s`, `5m`, `1h30m45s`."""
    match = _DURATION.fullmatch(value.strip())
    if not value.strip() or match is None:
        return None
    h, m, s = (int(match[g] or 0) for g in ("h", "m", "s"))
    return h * 3600 + m * 60 + s


def split_version(version: str) -> tuple[str, str]:
    """The model and version a `version` field names: `owner/name`, `owner/name:id` or `id`."""
    if ":" in version:
        model, _, version_id = version.partition(":")
        return model, version_id
    if "/" in version:
        return version, "hidden"
    return "replicate-sim/unnamed", version


def build_app(sim: Simulator) -> Starlette:
    settings = sim.settings
    quiet_cuts()

    def base_url(request: Request) -> str:
        return settings.sim_public_url.rstrip("/") or f"{request.url.scheme}://{request.url.netloc}"

    def authorized(request: Request) -> bool:
        if not settings.sim_api_token:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme in ("Bearer", "Token") and token == settings.sim_api_token

    def api(handler: Handler, *, faults: bool = True) -> Handler:
        """Replicate's checks before any call: the token, then (the knob) a server error."""

        async def guarded(request: Request) -> Response:
            if not authorized(request):
                return problem(
                    401, "Unauthenticated", "You did not pass a valid authentication token"
                )
            if faults and sim.api_error():
                return problem(500, "Internal Server Error", "Simulated API error")
            return await handler(request)

        return guarded

    async def create(request: Request, model: str | None) -> Response:
        retry_after = sim.throttled()
        if retry_after is not None:
            return problem(
                429,
                "Request was throttled.",
                f"Request was throttled. Your rate limit resets in ~{retry_after}s.",
                **{
                    "Retry-After": str(retry_after),
                    "ratelimit-remaining": "0",
                    "ratelimit-reset": str(retry_after),
                },
            )
        error_after_create = False
        if sim.api_error():
            if not sim.knobs.api_error_after_create:
                return problem(500, "Internal Server Error", "Simulated API error")
            error_after_create = True
        prefer = request.headers.get("prefer")
        if prefer is not None and not _PREFER.fullmatch(prefer):
            return problem(400, "Invalid Prefer header", "Prefer must be wait or wait=1..60")
        cancel_after_s: float | None = None
        if (cancel_after := request.headers.get("cancel-after")) is not None:
            cancel_after_s = parse_duration(cancel_after)
            if cancel_after_s is None or cancel_after_s < MIN_CANCEL_AFTER_S:
                return problem(
                    422,
                    "Invalid Cancel-After header",
                    f"Cancel-After must be a duration of at least {MIN_CANCEL_AFTER_S}s",
                )
        raw = await request.body()
        body: ModelPredictionRequest
        try:
            if model is not None:
                body = decode_json(raw, _MODEL_REQUEST)
            else:
                body = decode_json(raw, _VERSION_REQUEST)
        except msgspec.DecodeError as exc:
            return problem(422, "Input validation failed", str(exc))
        if body.webhook is not None and not body.webhook.startswith(("http://", "https://")):
            return problem(422, "Input validation failed", "webhook must be an HTTP(S) URL")
        if isinstance(body, VersionPredictionRequest):
            model, version = split_version(body.version)
        else:
            version = "hidden"
        assert model is not None
        prediction = sim.create(
            model=model,
            version=version,
            model_input=body.input,
            webhook=body.webhook,
            events=body.webhook_events_filter,
            cancel_after_s=cancel_after_s,
            base_url=base_url(request),
        )
        if error_after_create:
            return problem(500, "Internal Server Error", "Simulated API error after create")
        if prefer is not None:
            wait_s = min(60, int(prefer.partition("=")[2] or 60))
            await sim.wait_final(prediction, wait_s)
        return json_response(sim.show(prediction), 201)

    async def create_for_model(request: Request) -> Response:
        owner, name = request.path_params["owner"], request.path_params["name"]
        return await create(request, f"{owner}/{name}")

    async def create_for_version(request: Request) -> Response:
        return await create(request, None)

    def found(request: Request) -> Prediction | Response:
        prediction = sim.get(request.path_params["prediction_id"])
        if prediction is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        return prediction

    async def get_prediction(request: Request) -> Response:
        prediction = found(request)
        if isinstance(prediction, Response):
            return prediction
        return json_response(sim.show(prediction))

    async def cancel_prediction(request: Request) -> Response:
        prediction = found(request)
        if isinstance(prediction, Response):
            return prediction
        sim.cancel(prediction.id)
        return json_response(sim.show(prediction))

    async def stream(request: Request) -> Response:
        """`urls.stream`; like Replicate's stream URLs it needs no token and has no API faults."""
        prediction = found(request)
        if isinstance(prediction, Response):
            return prediction
        if not prediction.streams or prediction.data_removed:
            return problem(404, "Not found", "The requested resource could not be found.")
        response = await serve(sim, prediction)
        if response is None:
            return problem(408, "Request Timeout", "No output within the stream's idle time.")
        return response

    async def list_predictions(request: Request) -> Response:
        try:
            page = sim.page(request.query_params.get("cursor"))
        except CursorError:
            return problem(400, "Invalid cursor", "The cursor is not one this API issued.")
        root = f"{base_url(request)}/v1/predictions?cursor="
        return json_response(
            {
                "next": root + page.next_cursor if page.next_cursor else None,
                "previous": root + page.previous_cursor if page.previous_cursor else None,
                "results": [sim.show(p) for p in page.results],
            }
        )

    async def webhook_secret(request: Request) -> Response:
        return json_response({"key": settings.sim_webhook_secret})

    async def web_page(request: Request) -> Response:
        prediction = found(request)
        if isinstance(prediction, Response):
            return prediction
        shown = sim.show(prediction)
        text = "".join(shown["output"] or [])
        return HTMLResponse(
            f"<!doctype html><title>Prediction {prediction.id}</title>"
            f"<h1>{html.escape(prediction.model)}</h1><p>Status: {shown['status']}</p>"
            f"<pre>{html.escape(text)}</pre>"
        )

    async def config(request: Request) -> Response:
        if request.method == "PUT":
            try:
                patch: object = decode_json(await request.body())
                sim.configure(patch)
            except msgspec.DecodeError as exc:
                return problem(422, "Invalid configuration", str(exc))
            log.info("knobs changed", extra={"knobs": msgspec.to_builtins(sim.knobs)})
        return json_response(sim.knobs)

    async def reset(request: Request) -> Response:
        return json_response(sim.reset())

    async def audit(request: Request) -> Response:
        job = request.query_params.get("job")
        if not job:
            return problem(422, "Missing parameter", "job is required")
        return json_response({"results": sim.audit(job)})

    async def health(request: Request) -> Response:
        return json_response(
            {"status": "ok", "predictions": sim.size, "webhooksQueued": sim.sender.queued}
        )

    methods: dict[str, list[Literal["GET", "POST", "PUT"]]] = {
        "get": ["GET"],
        "post": ["POST"],
        "config": ["GET", "PUT"],
    }
    return Starlette(
        routes=[
            Route(
                "/v1/models/{owner}/{name}/predictions",
                api(create_for_model, faults=False),
                methods=methods["post"],
            ),
            Route("/v1/predictions", api(create_for_version, faults=False), methods=["POST"]),
            Route("/v1/predictions", api(list_predictions), methods=["GET"]),
            Route("/v1/predictions/{prediction_id}", api(get_prediction), methods=["GET"]),
            Route(
                "/v1/predictions/{prediction_id}/cancel",
                api(cancel_prediction),
                methods=["POST"],
            ),
            Route("/v1/webhooks/default/secret", api(webhook_secret), methods=["GET"]),
            Route("/v1/streams/{prediction_id}", stream, methods=["GET"]),
            Route("/p/{prediction_id}", web_page, methods=["GET"]),
            Route("/_sim/config", config, methods=methods["config"]),
            Route("/_sim/reset", reset, methods=["POST"]),
            Route("/_sim/predictions", audit, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ],
        middleware=[Middleware(EscapedQueryString)],
    )
