"""Settings of the gateway service, from the environment."""

from __future__ import annotations

from typing import ClassVar

from jobs_runtime.settings import Port, ServiceSettings


class Settings(ServiceSettings, frozen=True):
    """The gateway's settings; `APP_ENV=prod` requires NATS_URL AUTH_JWT_SECRET or AUTH_JWKS_URL."""

    required_in_prod: ClassVar[tuple[str, ...]] = (
        "NATS_URL",
        "AUTH_JWT_SECRET|AUTH_JWKS_URL",
    )

    admin_port: Port = 9000
    http_port: Port = 8000
    auth_jwt_secret: str = "dev-only-jwt-secret"
    auth_jwks_url: str = ""
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    user_requests_per_s: float = 0.0
    user_max_open_jobs: int = 0
