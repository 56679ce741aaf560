"""`gateway dev-token`: a token the dev gateway accepts, printed alone, signed with the secret
the running system uses (the environment's, else `make run`'s) and saying which; refused in
prod."""

import asyncio
import json
import secrets
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest

from gateway.auth import TokenVerifier
from gateway.config import DEV_JWT_SECRET
from gateway.tokens import AuthError, issue_token
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.stack import DevSecrets

from .test_gateway_processes import gateway_base_env as gateway_base_env

SECRET = "dev-token-test-secret-0123456789abcdefgh"


def dev_token(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [command_path("gateway"), "dev-token", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_in_dev_it_prints_a_token_signed_with_the_first_secret() -> None:
    done = dev_token(
        "--sub",
        "carol",
        "--ttl-days",
        "2",
        APP_ENV="dev",
        AUTH_JWT_SECRET=f"{SECRET},older-secret-0123456789abcdefghijk",
        AUTH_JWT_ISSUER="https://id.example",
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"
    assert await TokenVerifier([SECRET], issuer="https://id.example").verify(token) == "carol"
    # Valid for the days asked, not longer.
    later = TokenVerifier([SECRET], leeway_s=0, clock=lambda: time.time() + 2 * 86_400 + 60)
    with pytest.raises(AuthError, match="expired"):
        await later.verify(token)


async def test_the_default_user_is_dev_user() -> None:
    done = dev_token(APP_ENV="dev", AUTH_JWT_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    assert await TokenVerifier([SECRET]).verify(done.stdout.strip()) == "dev-user"


def test_in_prod_it_refuses_with_one_line_and_exit_code_2() -> None:
    done = dev_token(
        APP_ENV="prod",
        NATS_URL="tls://127.0.0.1:1",
        NATS_USER="gateway",
        NATS_PASSWORD=secrets.token_urlsafe(24),
        AUTH_JWT_SECRET=SECRET,
        AUTH_JWT_ISSUER="https://id.example/",
        AUTH_JWT_AUDIENCE="ai-jobs",
        JOB_TOKEN_SECRET=secrets.token_urlsafe(32),
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "APP_ENV=dev" in done.stderr


def test_it_says_on_stderr_which_secret_it_signed_with() -> None:
    done = dev_token(APP_ENV="dev", AUTH_JWT_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    assert "AUTH_JWT_SECRET from the environment" in done.stderr


async def test_without_the_variable_it_signs_with_the_secret_make_run_made(
    tmp_path: Path, gateway_base_env: dict[str, str]
) -> None:
    # What `make run` keeps in `.data/` and hands its gateway as AUTH_JWT_SECRET.
    made = DevSecrets()
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "dev-secrets.json").write_text(json.dumps(asdict(made)))
    below = tmp_path / "services" / "gateway"
    below.mkdir(parents=True)
    done = await asyncio.to_thread(
        subprocess.run,
        [command_path("gateway"), "dev-token", "--sub", "dana"],
        env={"PATH": "/usr/bin:/bin", "APP_ENV": "dev"},
        cwd=below,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "make run" in done.stderr
    assert str(tmp_path / ".data" / "dev-secrets.json") in done.stderr
    dev = done.stdout.strip()

    env = {**gateway_base_env, "AUTH_JWT_SECRET": made.jwt_secret}
    process = ServiceProcess([command_path("gateway")], env, tmp_path / "gateway.log")
    with process:
        process.wait_http(f"http://127.0.0.1:{env['ADMIN_PORT']}/readyz")
        url = f"http://127.0.0.1:{env['HTTP_PORT']}"
        async with httpx.AsyncClient(base_url=url) as api:
            # The token check comes first (401), validation after (422): a 422 is a token
            # accepted, with no job-store needed.
            signed = await api.post(
                "/api/jobs", json={}, headers={"Authorization": f"Bearer {dev}"}
            )
            assert signed.status_code == 422, signed.text
            # The dev default's token, which it signed before: refused by this system.
            old = issue_token(DEV_JWT_SECRET, subject="dana", ttl_s=60, now=time.time())
            refused = await api.post(
                "/api/jobs", json={}, headers={"Authorization": f"Bearer {old}"}
            )
            assert refused.status_code == 401, refused.text
        assert process.terminate() == 0, process.log
