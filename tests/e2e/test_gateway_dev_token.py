"""`gateway dev-token`: a token the dev gateway accepts, printed alone; refused in prod."""

import secrets
import subprocess
import time

import pytest

from gateway.auth import TokenVerifier
from gateway.tokens import AuthError
from jobs_testkit.processes import command_path

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
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "APP_ENV=dev" in done.stderr
