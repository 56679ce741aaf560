"""The ai-runner's settings: dev defaults that work locally, and one line naming a bad one."""

import secrets

import pytest

from ai_runner.config import Settings
from jobs_runtime.secrets import PUBLISHED
from jobs_runtime.settings import SettingsError, load_settings

# Prod needs the service's own NATS user (and TLS: the URLs are tls://).
PROD_NATS = {"NATS_USER": "svc", "NATS_PASSWORD": secrets.token_urlsafe(24)}


def test_dev_defaults_point_at_the_local_simulator_and_webhook_ingest() -> None:
    settings = load_settings(Settings, {})
    assert settings.admin_port == 9002
    assert settings.replicate_base_url == "http://127.0.0.1:8010"
    assert settings.replicate_webhook_url == "http://127.0.0.1:8001/api/webhooks/replicate"
    assert settings.binding_wait_s == 30.0
    assert settings.max_attempts == 5
    assert settings.consumer_ack_wait_s == 0.0  # the consumer's own configuration
    # Replicate's own limits: 600 creates a minute.
    assert (settings.creations_per_window, settings.creation_window_s) == (600, 60.0)
    assert settings.reconcile_after_s == 300.0


def test_an_empty_webhook_url_is_polling_mode_not_an_error() -> None:
    assert load_settings(Settings, {"REPLICATE_WEBHOOK_URL": ""}).replicate_webhook_url == ""


def test_polling_cannot_slow_down_below_its_first_interval() -> None:
    with pytest.raises(SettingsError, match=r"^POLL_MAX_S: "):
        load_settings(Settings, {"POLL_MIN_S": "5", "POLL_MAX_S": "2"})


def test_prod_needs_a_replicate_token() -> None:
    with pytest.raises(SettingsError, match=r"^REPLICATE_API_TOKEN: missing"):
        load_settings(Settings, {"APP_ENV": "prod", "NATS_URL": "tls://nats:4222", **PROD_NATS})


@pytest.mark.parametrize("published", sorted(PUBLISHED))
def test_prod_refuses_a_published_replicate_token(published: str) -> None:
    env = {
        "APP_ENV": "prod",
        "NATS_URL": "tls://nats:4222",
        **PROD_NATS,
        "REPLICATE_API_TOKEN": published,
    }
    with pytest.raises(SettingsError) as error:
        load_settings(Settings, env)
    assert str(error.value).startswith("REPLICATE_API_TOKEN: the secret is published")
    assert published not in str(error.value)


def test_prod_accepts_a_token_of_its_own() -> None:
    token = "r8_" + secrets.token_hex(20)
    env = {
        "APP_ENV": "prod",
        "NATS_URL": "tls://nats:4222",
        **PROD_NATS,
        "REPLICATE_API_TOKEN": token,
    }
    assert load_settings(Settings, env).replicate_api_token == token


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REPLICATE_BASE_URL", "api.replicate.com"),
        ("REPLICATE_BASE_URL", "ftp://api.replicate.com"),
        ("REPLICATE_WEBHOOK_URL", "/api/webhooks/replicate"),
        ("RETRY_BASE_S", "0"),
        ("REPLICATE_TIMEOUT_S", "soon"),
        ("BINDING_WAIT_S", "0"),
        ("MAX_ATTEMPTS", "0"),
        ("CONSUMER_ACK_WAIT_S", "-1"),
        ("RECONCILE_AFTER_S", "0"),
        ("CREATIONS_PER_WINDOW", "-1"),
        ("CREATION_WINDOW_S", "0"),
        ("MAX_IN_FLIGHT", "-1"),
        ("POLL_MIN_S", "0"),
        ("RECONCILE_CONCURRENCY", "0"),
    ],
)
def test_a_malformed_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}: "):
        load_settings(Settings, {name: value})
