"""Every service's installed command starts, answers its admin port and exits 0 on SIGTERM."""

import secrets
import subprocess
import uuid
from pathlib import Path

import pytest

from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import free_port

# Prod needs the service's own NATS user (and TLS: the URLs are tls://).
PROD_NATS = {"NATS_USER": "svc", "NATS_PASSWORD": secrets.token_urlsafe(24)}

SERVICES = ["gateway", "ai-runner", "webhook-ingest", "job-store"]


@pytest.mark.parametrize("service", SERVICES)
def test_command_serves_health_and_stops_cleanly(
    service: str, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    admin = free_port()
    env = {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "ADMIN_PORT": str(admin),
        "HTTP_PORT": str(free_port()),
        "JOBS_STREAM": f"JOBS_{uuid.uuid4().hex[:8]}",
        "SUBJECT_PREFIX": f"t{uuid.uuid4().hex[:8]}.",
    }
    with ServiceProcess([command_path(service)], env, tmp_path / "service.log") as process:
        base = f"http://127.0.0.1:{admin}"
        assert process.wait_http(f"{base}/healthz").json()["status"] == "ok"
        ready = process.wait_http(f"{base}/readyz")
        assert ready.json()["checks"]["nats"] == "ok"
        assert "python_info" in process.wait_http(f"{base}/metrics").text
        assert process.terminate() == 0, process.log
    assert '"msg":"stopped"' in process.log


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        ("gateway", "AUTH_JWT_SECRET or AUTH_JWKS_URL"),
        ("ai-runner", "REPLICATE_API_TOKEN"),
        ("webhook-ingest", "REPLICATE_WEBHOOK_SECRET"),
        ("job-store", "DATABASE_URL"),
    ],
)
def test_prod_without_its_secrets_stops_with_one_line(service: str, variable: str) -> None:
    result = subprocess.run(
        [command_path(service)],
        env={"APP_ENV": "prod", "NATS_URL": "tls://127.0.0.1:1", **PROD_NATS},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{service}: configuration error: {variable}: missing (required when APP_ENV=prod)"
    ]


@pytest.mark.parametrize(
    ("service", "variable", "published"),
    [
        ("gateway", "AUTH_JWT_SECRET", "dev-only-jwt-secret"),
        ("webhook-ingest", "REPLICATE_WEBHOOK_SECRET", "whsec_ZGV2LW9ubHktd2ViaG9vay1zZWNyZXQ="),
    ],
)
def test_prod_with_a_published_secret_stops_with_one_line(
    service: str, variable: str, published: str
) -> None:
    result = subprocess.run(
        [command_path(service)],
        env={
            "APP_ENV": "prod",
            "NATS_URL": "tls://127.0.0.1:1",
            **PROD_NATS,
            # The gateway's other prod requirements, so only the secret can be refused.
            "AUTH_JWT_ISSUER": "https://id.example/",
            "AUTH_JWT_AUDIENCE": "ai-jobs",
            "JOB_TOKEN_SECRET": secrets.token_urlsafe(32),
            variable: published,
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{service}: configuration error: {variable}: the secret is published in the repository"
        " (a dev default or an example); refused when APP_ENV=prod"
    ]


def test_a_malformed_setting_is_named() -> None:
    result = subprocess.run(
        [command_path("job-store")],
        env={"ADMIN_PORT": "nine"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("job-store: configuration error: ADMIN_PORT: Expected `int`")


def test_the_simulator_command_serves_replicates_api(tmp_path: Path) -> None:
    port = free_port()
    env = {"HTTP_PORT": str(port), "SIM_API_TOKEN": "r8_sim"}
    with ServiceProcess([command_path("replicate-sim")], env, tmp_path / "sim.log") as process:
        base = f"http://127.0.0.1:{port}"
        assert process.wait_http(f"{base}/healthz").json()["status"] == "ok"
        secret = process.wait_http(f"{base}/v1/webhooks/default/secret", status=401)
        assert secret.json()["status"] == 401
        assert process.terminate() == 0, process.log
    assert '"msg":"stopped"' in process.log


def test_the_simulator_refuses_a_bad_secret() -> None:
    result = subprocess.run(
        [command_path("replicate-sim")],
        env={"SIM_WEBHOOK_SECRET": "not-a-secret"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("replicate-sim: configuration error: SIM_WEBHOOK_SECRET")
