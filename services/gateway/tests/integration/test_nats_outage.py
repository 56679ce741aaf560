"""NATS going away under a running gateway: every request answers `503` with `Retry-After`
at once (never a `404`, never a hung request), and admission resumes when NATS is back."""

import time
from pathlib import Path

import httpx

from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import NatsServer, free_port
from jobs_testkit.waiting import eventually

from .conftest import SECRET, bearer, random_job_id

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
                started = time.monotonic()
                response = await api.request(method, path, json=JOB if method == "POST" else None)
                # Refused at once, not after a publish or request timed out in a buffer.
                assert time.monotonic() - started < 1.5, method
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/problem+json"
                assert int(response.headers["retry-after"]) > 0

            restartable_nats.start()

            async def admitted() -> bool:
                return (await api.post("/api/jobs", json=JOB)).status_code == 202

            await eventually(admitted, within=15)
        assert gateway.terminate() == 0, gateway.log
