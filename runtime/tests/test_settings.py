from typing import ClassVar

import pytest

from jobs_runtime.settings import ServiceSettings, SettingsError, load_settings


class RunnerSettings(ServiceSettings, frozen=True):
    required_in_prod: ClassVar[tuple[str, ...]] = ("NATS_URL", "API_TOKEN", "SECRET_A|SECRET_B")

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
    env = {"APP_ENV": "prod", "NATS_URL": "nats://n:4222", "API_TOKEN": "t", "SECRET_B": "s"}
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
