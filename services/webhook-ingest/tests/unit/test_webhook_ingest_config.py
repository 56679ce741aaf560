"""Settings: the body limit's floor and the secrets' shape are checked at start, naming the
variable but never a secret's value."""

from __future__ import annotations

import pytest

from jobs_runtime.settings import SettingsError, load_settings
from webhook_ingest.config import MIB, Settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_dev_defaults_work() -> None:
    settings = load_settings(Settings, {})
    assert (settings.http_port, settings.admin_port) == (8001, 9001)
    assert settings.webhook_max_bytes == 16 * MIB


def test_the_body_limit_may_not_go_below_ten_mib() -> None:
    assert load_settings(Settings, {"WEBHOOK_MAX_BYTES": str(10 * MIB)}).webhook_max_bytes
    with pytest.raises(SettingsError, match=r"^WEBHOOK_MAX_BYTES"):
        load_settings(Settings, {"WEBHOOK_MAX_BYTES": str(10 * MIB - 1)})


def test_a_bad_secret_is_named_without_its_value() -> None:
    with pytest.raises(SettingsError, match=r"^REPLICATE_WEBHOOK_SECRET: secret 2") as caught:
        load_settings(Settings, {"REPLICATE_WEBHOOK_SECRET": f"{SECRET},MfKQ9r8GKYqrTwjUPD8I"})
    assert "MfKQ9r8GKYqrTwjUPD8I" not in str(caught.value)


def test_prod_requires_the_secret() -> None:
    with pytest.raises(SettingsError, match="REPLICATE_WEBHOOK_SECRET"):
        load_settings(Settings, {"APP_ENV": "prod", "NATS_URL": "nats://nats:4222"})
