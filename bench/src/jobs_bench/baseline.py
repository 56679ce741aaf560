"""The baseline: the original single-process design (one Starlette app, asyncpg, the same
`replicate` client and simulator, the seed's routes, no bus), measured beside the system.

`POST` inserts the job, creates the prediction with a webhook and answers; the webhook route
verifies the signature and writes the result; the status route reads the row. Run it with
`python -m jobs_bench.baseline`; configured by `BASELINE_*` variables.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import msgspec
import replicate
from replicate.webhook import Webhooks, WebhookSigningSecret
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs_bench.serving import run_like_a_service, serve_until_signal
from jobs_proto.job_types import JOB_TYPES

SCHEMA = """
CREATE TABLE IF NOT EXISTS async_jobs (
    id uuid PRIMARY KEY,
    type text NOT NULL,
    status text NOT NULL,
    input jsonb NOT NULL,
    prediction_id text,
    output text,
    error text,
    user_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
)
"""

SEED_ROUTES = {
    "/api/ideation/generate-script": "script_generation",
    "/api/ideation/video-outline": "video_outline",
    "/api/ideation/generate-titles": "title_generation",
}
_FINAL = {"succeeded": "succeeded", "failed": "failed", "canceled": "canceled"}

Handler = Callable[[Request], Awaitable[Response]]

# What the original design asked Replicate for: its text came from `output` webhooks.
ORIGINAL_WEBHOOK_EVENTS = ("start", "output", "completed")


def build_app(
    pool: asyncpg.Pool, client: replicate.Client, webhook_url: str, secret: str
) -> Starlette:
    signing = WebhookSigningSecret(key=secret)

    async def create(job_type: str, job_input: dict[str, Any]) -> Response:
        kind = JOB_TYPES.get(job_type)
        if kind is None:
            return JSONResponse({"error": "unknown type"}, status_code=422)
        try:
            model_input = kind.model_input(kind.parse_input(job_input))
        except msgspec.ValidationError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        job_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO async_jobs (id, type, status, input) VALUES ($1, $2, 'pending', $3)",
            job_id,
            job_type,
            json.dumps(job_input),
        )
        prediction = await client.models.predictions.async_create(
            model=kind.model,
            input=model_input,
            webhook=f"{webhook_url}?job={job_id}",
            # The original design shows a job's text only through `output` webhooks (it has no
            # relay): it asks for them whatever the system's job types ask for.
            webhook_events_filter=list(ORIGINAL_WEBHOOK_EVENTS),
        )
        # With a fast model the webhook can land before this update: never undo its result.
        await pool.execute(
            "UPDATE async_jobs SET prediction_id = $2, updated_at = now(),"
            " status = CASE status WHEN 'pending' THEN 'processing' ELSE status END"
            " WHERE id = $1",
            job_id,
            prediction.id,
        )
        return JSONResponse({"jobId": str(job_id), "status": "pending"}, status_code=202)

    async def create_job(request: Request) -> Response:
        body = await request.json()
        return await create(body.get("type", ""), body.get("input") or {})

    def seed_route(job_type: str) -> Handler:
        async def handler(request: Request) -> Response:
            return await create(job_type, await request.json())

        return handler

    async def get_job(request: Request) -> Response:
        try:
            job_id = uuid.UUID(request.path_params["job_id"])
        except ValueError:
            return JSONResponse({"error": "not found"}, status_code=404)
        row = await pool.fetchrow(
            "SELECT id, type, status, output, error, created_at, updated_at FROM async_jobs"
            " WHERE id = $1",
            job_id,
        )
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(
            {
                "jobId": str(row["id"]),
                "type": row["type"],
                "status": row["status"],
                "output": row["output"],
                "error": row["error"],
                "createdAt": row["created_at"].isoformat(),
                "updatedAt": row["updated_at"].isoformat(),
            }
        )

    async def webhook(request: Request) -> Response:
        body = await request.body()
        try:
            Webhooks.validate(headers=dict(request.headers), body=body.decode(), secret=signing)
        except Exception:
            return Response(status_code=401)
        prediction = json.loads(body)
        status = _FINAL.get(prediction.get("status", ""))
        output = prediction.get("output")
        text = "".join(output) if isinstance(output, list) else output
        if status is None:
            # `start` and `output`: the output so far, as the system keeps it for its readers.
            await pool.execute(
                "UPDATE async_jobs SET status = 'processing', output = $2, updated_at = now()"
                " WHERE id = $1 AND status IN ('pending', 'processing')",
                uuid.UUID(request.query_params["job"]),
                text,
            )
            return Response(status_code=200)
        await pool.execute(
            "UPDATE async_jobs SET status = $2, output = $3, error = $4, updated_at = now(),"
            " completed_at = now() WHERE id = $1 AND status NOT IN"
            " ('succeeded', 'failed', 'canceled')",
            uuid.UUID(request.query_params["job"]),
            status,
            text,
            None if prediction.get("error") is None else str(prediction["error"]),
        )
        return Response(status_code=200)

    routes = [
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/api/webhooks/replicate", webhook, methods=["POST"]),
        *(Route(path, seed_route(t), methods=["POST"]) for path, t in SEED_ROUTES.items()),
    ]
    return Starlette(routes=routes)


async def serve() -> None:
    env = os.environ
    port = int(env.get("BASELINE_PORT", "8100"))
    pool = await asyncpg.create_pool(env["BASELINE_DATABASE_URL"], min_size=2, max_size=10)
    assert pool is not None
    await pool.execute(SCHEMA)
    client = replicate.Client(
        api_token=env["BASELINE_REPLICATE_API_TOKEN"],
        base_url=env["BASELINE_REPLICATE_BASE_URL"],
        timeout=httpx.Timeout(30.0),
    )
    app = build_app(
        pool,
        client,
        f"http://127.0.0.1:{port}/api/webhooks/replicate",
        env["BASELINE_WEBHOOK_SECRET"],
    )
    try:
        await serve_until_signal(app, port, "baseline")
    finally:
        await pool.close()


if __name__ == "__main__":
    run_like_a_service(serve())
