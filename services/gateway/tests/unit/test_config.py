"""The gateway's settings: secrets for rotation, the body limit, and no dev secret in prod."""

import pytest

from gateway.config import DEV_JWT_SECRET, Settings
from jobs_runtime.settings import SettingsError, load_settings

PROD = {"APP_ENV": "prod", "NATS_URL": "nats://nats:4222"}


def test_dev_works_with_defaults() -> None:
    settings = load_settings(Settings, {})
    assert settings.jwt_secrets == (DEV_JWT_SECRET,)
    assert (settings.http_port, settings.admin_port) == (8000, 9000)
    assert settings.http_max_body_bytes == 64 * 1024


def test_secrets_are_comma_separated_in_order() -> None:
    settings = load_settings(Settings, {"AUTH_JWT_SECRET": " new , old,,"})
    assert settings.jwt_secrets == ("new", "old")


def test_the_body_limit_is_configurable_and_positive() -> None:
    assert load_settings(Settings, {"HTTP_MAX_BODY_BYTES": "1024"}).http_max_body_bytes == 1024
    with pytest.raises(SettingsError, match="HTTP_MAX_BODY_BYTES"):
        load_settings(Settings, {"HTTP_MAX_BODY_BYTES": "0"})


def test_prod_needs_a_secret_or_a_jwks_url() -> None:
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET or AUTH_JWKS_URL"):
        load_settings(Settings, PROD)
    assert load_settings(Settings, {**PROD, "AUTH_JWT_SECRET": "s3cret"}).jwt_secrets == ("s3cret",)


def test_the_dev_secret_never_verifies_in_prod() -> None:
    jwks_only = load_settings(Settings, {**PROD, "AUTH_JWKS_URL": "https://id.example/jwks"})
    assert jwks_only.jwt_secrets == ()
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        load_settings(Settings, {**PROD, "AUTH_JWT_SECRET": DEV_JWT_SECRET})
