"""NATS going away under a running gateway: every request answers `503` with `Retry-After`
at once (never a `404`, never a hung request), and admission resumes when NATS is back."""

import json
from pathlib import Path

import httpx

from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.waiting import eventually

from .test_gateway_processes import SECRET, bearer, random_job_id
from .test_gateway_processes import gateway as gateway
from .test_gateway_processes import gateway_base_env as gateway_base_env
from .test_gateway_processes import gateway_env as gateway_env

JOB = {"type": "video_outline", "input": {"topic": "tides"}}


async def test_a_gateway_without_nats_answers_503_then_recovers(
    tmp_path: Path, restartable_nats: NatsServer
) -> None:
    admin_port, http_port = free_port(), free_port()
    env = {
        "NATS_URL": restartable_nats.url,
        "SUBJECT_PREFIX": "outage.",
        "ADMIN_PORT": str(admin_port),
        "HTTP_PORT": str(http_port),
        "AUTH_JWT_SECRET": SECRET,
    }
    with ServiceProcess([command_path("gateway")], env, tmp_path / "gateway.log") as gateway:
        gateway.wait_http(f"http://127.0.0.1:{admin_port}/readyz")
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{http_port}", headers=bearer("alice"), timeout=10
        ) as api:
            assert (await api.post("/api/jobs", json=JOB)).status_code == 202

            restartable_nats.stop()
            for method, path in (("POST", "/api/jobs"), ("GET", f"/api/jobs/{random_job_id()}")):
                response = await api.request(method, path, json=JOB if method == "POST" else None)
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) > 0
                # Refused at once, not after a publish or request timed out in a buffer: by
                # the reason the gateway logged, not by a clock. "not connected to NATS" is
                # raised only before anything is handed to nats-py; a request sent into the
                # reconnect buffer would fail later as "job-store did not answer: Timeout..."
                # or "JetStream did not store the event: ...".
                assert await logged_refusals(gateway, path) == ["not connected to NATS"], path

            restartable_nats.start()

            async def admitted() -> bool:
                return (await api.post("/api/jobs", json=JOB)).status_code == 202

            await eventually(admitted, within=15)
        assert gateway.terminate() == 0, gateway.log


async def logged_refusals(process: ServiceProcess, path: str) -> list[str]:
    """The reasons of the gateway's logged `503`s for `path`, once there is one: the request
    line is written after the answer has gone out, so a client can read the log before it."""
    await eventually(lambda: bool(refusal_reasons(process.log, path)), what=f"503 on {path}")
    return refusal_reasons(process.log, path)


def refusal_reasons(log: str, path: str) -> list[str]:
    """The `reason` of every `503` the gateway logged for `path` (its JSON request log)."""
    reasons = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if (entry.get("msg"), entry.get("path"), entry.get("status")) == ("request", path, 503):
            reasons.append(entry.get("reason"))
    return reasons
