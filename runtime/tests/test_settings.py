from pathlib import Path
from typing import ClassVar

import pytest

from jobs_runtime.settings import ServiceSettings, SettingsError, load_settings


class RunnerSettings(ServiceSettings, frozen=True):
    required_in_prod: ClassVar[tuple[str, ...]] = ("NATS_URL", "API_TOKEN", "SECRET_A|SECRET_B")
    # Its NATS rules are tested with `NatsSettings` below.

    api_token: str = "dev-token"
    secret_a: str = ""
    secret_b: str = ""
    reconcile_after_s: float = 300.0


def test_dev_gives_every_setting_a_working_default() -> None:
    settings = load_settings(RunnerSettings, {})
    assert settings.app_env == "dev"
    assert settings.nats_url.startswith("nats://")
    assert settings.api_token == "dev-token"


def test_values_are_typed_from_strings_and_unrelated_variables_ignored() -> None:
    settings = load_settings(
        RunnerSettings,
        {
            "RECONCILE_AFTER_S": "12.5",
            "ADMIN_PORT": "9100",
            "PATH": "/bin",
            "SUBJECT_PREFIX": "t1.",
        },
    )
    assert settings.reconcile_after_s == 12.5
    assert settings.admin_port == 9100
    assert settings.subjects.all_events == "t1.job.>"


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"APP_ENV": "prod"}, "NATS_URL: missing (required when APP_ENV=prod)"),
        ({"APP_ENV": "prod", "NATS_URL": "nats://n:4222"}, "API_TOKEN: missing"),
        (
            {"APP_ENV": "prod", "NATS_URL": "nats://n:4222", "API_TOKEN": "t"},
            "SECRET_A or SECRET_B: missing",
        ),
        ({"APP_ENV": "prod", "NATS_URL": "", "API_TOKEN": "t"}, "NATS_URL: missing"),
        ({"APP_ENV": "staging"}, "APP_ENV: must be 'dev' or 'prod'"),
        ({"ADMIN_PORT": "ninety"}, "ADMIN_PORT: Expected `int`, got `str`"),
        ({"ADMIN_PORT": "70000"}, "ADMIN_PORT: Expected `int` <= 65535"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL: Invalid enum value 'LOUD'"),
        ({"SUBJECT_PREFIX": "no-dot"}, "SUBJECT_PREFIX: subject prefix must be empty or end"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(env: dict[str, str], line: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(RunnerSettings, env)
    message = str(error.value)
    assert message.startswith(line)
    assert "\n" not in message


def test_prod_starts_with_what_it_requires() -> None:
    env = {"APP_ENV": "prod", "NATS_URL": "tls://n:4222", "API_TOKEN": "t", "SECRET_B": "s"}
    settings = load_settings(RunnerSettings, env)
    assert settings.app_env == "prod"
    assert settings.secret_b == "s"


def test_a_malformed_secret_is_named_but_never_echoed() -> None:
    class Strict(ServiceSettings, frozen=True):
        token_count: int = 1

    with pytest.raises(SettingsError) as error:
        load_settings(Strict, {"TOKEN_COUNT": "sk-very-secret"})
    assert "TOKEN_COUNT" in str(error.value)
    assert "sk-very-secret" not in str(error.value)


NATS_PROD = {"APP_ENV": "prod", "API_TOKEN": "t", "SECRET_B": "s"}


class NatsSettings(ServiceSettings, frozen=True):
    """The runtime's own prod rules, as every service inherits them."""


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {**NATS_PROD, "NATS_URL": "tls://n:4222"},
            "NATS_USER or NATS_CREDS: missing (required when APP_ENV=prod)",
        ),
        (
            {**NATS_PROD, "NATS_URL": "nats://n:4222", "NATS_USER": "u", "NATS_PASSWORD": "p"},
            "NATS_TLS_CA: missing (required when APP_ENV=prod unless NATS_URL is tls://)",
        ),
        ({"NATS_USER": "u"}, "NATS_PASSWORD: missing (required with NATS_USER)"),
        ({"NATS_PASSWORD": "p"}, "NATS_USER: missing (required with NATS_PASSWORD)"),
        ({"NATS_TLS_CA": "/nowhere/ca.pem"}, "NATS_TLS_CA: no such file"),
        (
            {"NATS_USER": "u", "NATS_PASSWORD": "p", "NATS_CREDS": "/nowhere/x.creds"},
            "NATS_CREDS: set either NATS_CREDS or NATS_USER, not both",
        ),
    ],
)
def test_nats_credentials_and_tls_are_checked(env: dict[str, str], line: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(NatsSettings, env)
    assert str(error.value) == line


def test_prod_takes_a_user_over_tls_and_never_shows_the_password(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not parsed until connecting")
    env = {
        **NATS_PROD,
        "NATS_URL": "nats://n:4222",
        "NATS_USER": "gateway",
        "NATS_PASSWORD": "s3cret-pass",
        "NATS_TLS_CA": str(ca),
    }
    auth = load_settings(NatsSettings, env).nats_auth
    assert (auth.user, auth.password, auth.tls_ca) == ("gateway", "s3cret-pass", str(ca))
    assert "s3cret-pass" not in repr(auth)


def test_prod_takes_a_creds_file_and_a_tls_url(tmp_path: Path) -> None:
    creds = tmp_path / "gateway.creds"
    creds.write_text("jwt and seed")
    env = {**NATS_PROD, "NATS_URL": "tls://a:4222,tls://b:4222", "NATS_CREDS": str(creds)}
    assert load_settings(NatsSettings, env).nats_auth.creds == str(creds)
