"""Settings: the body limit's floor and the secrets' shape are checked at start, naming the
variable but never a secret's value."""

from __future__ import annotations

import base64
import secrets

import pytest

from jobs_runtime.secrets import PUBLISHED
from jobs_runtime.settings import SettingsError, load_settings
from webhook_ingest.config import MIB, FetchSecretSettings, Settings

# Prod needs the service's own NATS user (and TLS: the URLs are tls://).
PROD_NATS = {"NATS_USER": "svc", "NATS_PASSWORD": secrets.token_urlsafe(24)}

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_dev_defaults_work() -> None:
    settings = load_settings(Settings, {})
    assert (settings.http_port, settings.admin_port) == (8001, 9001)
    assert settings.webhook_max_bytes == 16 * MIB
    assert (settings.webhook_rate_per_s, settings.webhook_rate_burst) == (1000, 2000)
    assert (settings.trusted_proxy_hops, settings.webhook_max_large_bodies) == (0, 4)
    assert settings.webhook_max_large_bodies_per_source == 2
    assert settings.webhook_read_timeout_s == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_RATE_PER_S", "-1"),
        ("WEBHOOK_RATE_BURST", "0"),
        ("TRUSTED_PROXY_HOPS", "-1"),
        ("WEBHOOK_MAX_LARGE_BODIES", "0"),
        ("WEBHOOK_MAX_LARGE_BODIES_PER_SOURCE", "0"),
        ("WEBHOOK_READ_TIMEOUT_S", "0"),
    ],
)
def test_abuse_limits_out_of_range_are_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}"):
        load_settings(Settings, {name: value})


def test_rate_zero_turns_the_rate_limit_off() -> None:
    assert load_settings(Settings, {"WEBHOOK_RATE_PER_S": "0"}).webhook_rate_per_s == 0


def test_the_service_reads_no_token_fetch_secret_needs_one_in_prod() -> None:
    assert "replicate_api_token" not in Settings.__struct_fields__
    with pytest.raises(SettingsError, match="REPLICATE_API_TOKEN"):
        load_settings(FetchSecretSettings, {"APP_ENV": "prod"})
    with pytest.raises(SettingsError, match=r"^REPLICATE_BASE_URL"):
        load_settings(FetchSecretSettings, {"REPLICATE_BASE_URL": "api.replicate.com"})


def test_the_body_limit_may_not_go_below_ten_mib() -> None:
    assert load_settings(Settings, {"WEBHOOK_MAX_BYTES": str(10 * MIB)}).webhook_max_bytes
    with pytest.raises(SettingsError, match=r"^WEBHOOK_MAX_BYTES"):
        load_settings(Settings, {"WEBHOOK_MAX_BYTES": str(10 * MIB - 1)})


def test_a_bad_secret_is_named_without_its_value() -> None:
    with pytest.raises(SettingsError, match=r"^REPLICATE_WEBHOOK_SECRET: secret 2") as caught:
        load_settings(Settings, {"REPLICATE_WEBHOOK_SECRET": f"{SECRET},MfKQ9r8GKYqrTwjUPD8I"})
    assert "MfKQ9r8GKYqrTwjUPD8I" not in str(caught.value)


def own_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.mark.parametrize("published", sorted(PUBLISHED))
def test_prod_refuses_a_published_webhook_secret_or_token(published: str) -> None:
    env = {"APP_ENV": "prod", "NATS_URL": "tls://nats:4222", **PROD_NATS}
    with pytest.raises(SettingsError) as error:
        load_settings(Settings, {**env, "REPLICATE_WEBHOOK_SECRET": f"{published}"})
    assert str(error.value).startswith("REPLICATE_WEBHOOK_SECRET: the secret is published")
    assert published not in str(error.value)
    with pytest.raises(SettingsError, match=r"^REPLICATE_API_TOKEN: the secret is published"):
        load_settings(FetchSecretSettings, {"APP_ENV": "prod", "REPLICATE_API_TOKEN": published})


def test_prod_accepts_secrets_of_its_own_during_rotation() -> None:
    rotation = f"{own_webhook_secret()},{own_webhook_secret()}"
    env = {
        "APP_ENV": "prod",
        "NATS_URL": "tls://nats:4222",
        **PROD_NATS,
        "REPLICATE_WEBHOOK_SECRET": rotation,
    }
    assert load_settings(Settings, env).replicate_webhook_secret == rotation
    token = "r8_" + secrets.token_hex(20)
    assert load_settings(FetchSecretSettings, {"APP_ENV": "prod", "REPLICATE_API_TOKEN": token})


def test_prod_requires_the_secret() -> None:
    with pytest.raises(SettingsError, match="REPLICATE_WEBHOOK_SECRET"):
        load_settings(Settings, {"APP_ENV": "prod", "NATS_URL": "tls://nats:4222", **PROD_NATS})
