"""The gateway's settings: secrets for rotation, the body limit, and no published or short
HS256 secret in prod."""

import logging
import secrets

import pytest

from gateway.__main__ import _warn_about_auth
from gateway.config import DEV_JOB_TOKEN_SECRET, DEV_JWT_SECRET, Settings
from jobs_runtime.secrets import PUBLISHED
from jobs_runtime.settings import SettingsError, load_settings

# Prod needs the service's own NATS user (and TLS: the URLs are tls://), an issuer and an
# audience.
PROD_NATS = {"NATS_USER": "svc", "NATS_PASSWORD": secrets.token_urlsafe(24)}
PROD = {
    "APP_ENV": "prod",
    "NATS_URL": "tls://nats:4222",
    **PROD_NATS,
    "AUTH_JWT_ISSUER": "https://id.example/",
    "AUTH_JWT_AUDIENCE": "ai-jobs",
    "JOB_TOKEN_SECRET": secrets.token_urlsafe(32),
}


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
    own = secrets.token_urlsafe(32)
    assert load_settings(Settings, {**PROD, "AUTH_JWT_SECRET": own}).jwt_secrets == (own,)


def test_the_jwks_url_must_be_https_in_prod() -> None:
    # Over http:// anyone on the path can serve their own keys and mint tokens.
    with pytest.raises(SettingsError) as refused:
        load_settings(Settings, {**PROD, "AUTH_JWKS_URL": "http://id.example/jwks"})
    assert str(refused.value) == "AUTH_JWKS_URL: must be an https:// URL when APP_ENV=prod"
    # In dev a local identity provider over http:// is fine.
    assert load_settings(Settings, {"AUTH_JWKS_URL": "http://127.0.0.1:9999/jwks"}).auth_jwks_url


@pytest.mark.parametrize("variable", ["AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"])
@pytest.mark.parametrize("value", [None, ""])
def test_issuer_and_audience_are_required_in_prod(variable: str, value: str | None) -> None:
    env = {**PROD, "AUTH_JWT_SECRET": "s3cret"}
    if value is None:
        del env[variable]
    else:
        env[variable] = value
    with pytest.raises(SettingsError) as refused:
        load_settings(Settings, env)
    assert str(refused.value) == f"{variable}: missing (required when APP_ENV=prod)"
    # Not in dev, where tokens come from `gateway dev-token`.
    assert load_settings(Settings, {}).auth_jwt_issuer == ""


def test_the_dev_secret_never_verifies_in_prod() -> None:
    jwks_only = load_settings(Settings, {**PROD, "AUTH_JWKS_URL": "https://id.example/jwks"})
    assert jwks_only.jwt_secrets == ()
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        load_settings(Settings, {**PROD, "AUTH_JWT_SECRET": DEV_JWT_SECRET})


@pytest.mark.parametrize("published", sorted(PUBLISHED))
def test_prod_refuses_a_published_secret_even_beside_a_good_one(published: str) -> None:
    rotation = f"{secrets.token_urlsafe(32)},{published}"
    with pytest.raises(SettingsError) as error:
        load_settings(Settings, {**PROD, "AUTH_JWT_SECRET": rotation})
    assert str(error.value).startswith("AUTH_JWT_SECRET: secret 2 is published")
    assert published not in str(error.value)


def test_prod_refuses_hs256_secrets_under_32_bytes_dev_takes_them() -> None:
    with pytest.raises(SettingsError, match=r"^AUTH_JWT_SECRET: the secret is shorter than 32"):
        load_settings(Settings, {**PROD, "AUTH_JWT_SECRET": "x" * 31})
    assert load_settings(Settings, {**PROD, "AUTH_JWT_SECRET": "x" * 32})
    assert load_settings(Settings, {"AUTH_JWT_SECRET": "short"}).jwt_secrets == ("short",)


def test_cors_origins_are_comma_separated_and_none_by_default() -> None:
    assert load_settings(Settings, {}).cors_origin_list == ()
    settings = load_settings(Settings, {"CORS_ORIGINS": " https://a.example/ ,,http://b:3000"})
    assert settings.cors_origin_list == ("https://a.example", "http://b:3000")


def test_the_jwks_url_must_be_http_and_its_refetches_are_rate_limited() -> None:
    settings = load_settings(Settings, {"AUTH_JWKS_URL": "https://id.example/jwks"})
    assert settings.auth_jwks_refresh_cooldown_s == 10.0
    with pytest.raises(SettingsError, match="AUTH_JWKS_URL"):
        load_settings(Settings, {"AUTH_JWKS_URL": "file:///etc/jwks.json"})
    with pytest.raises(SettingsError, match="AUTH_JWKS_REFRESH_COOLDOWN_S"):
        load_settings(Settings, {"AUTH_JWKS_REFRESH_COOLDOWN_S": "-1"})


def test_a_jwks_url_alone_is_a_supported_prod_configuration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(Settings, {**PROD, "AUTH_JWKS_URL": "https://id.example/jwks"})
    with caplog.at_level(logging.WARNING, logger="gateway"):
        _warn_about_auth(settings)
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="gateway"):
        _warn_about_auth(load_settings(Settings, {"AUTH_JWT_SECRET": ""}))
    assert "every token will be refused" in caplog.text


def test_per_user_limits_are_off_by_default_and_never_negative() -> None:
    settings = load_settings(Settings, {})
    assert (settings.user_requests_per_s, settings.user_max_open_jobs) == (0.0, 0)
    assert settings.job_cache_bytes == 64 * 1024 * 1024
    limited = load_settings(Settings, {"USER_REQUESTS_PER_S": "5", "USER_MAX_OPEN_JOBS": "20"})
    assert (limited.user_requests_per_s, limited.user_max_open_jobs) == (5.0, 20)
    assert limited.request_burst == 10.0  # twice the rate unless set
    slow = load_settings(Settings, {"USER_REQUESTS_PER_S": "0.1"})
    assert slow.request_burst == 1.0
    assert load_settings(Settings, {"USER_REQUESTS_BURST": "3"}).request_burst == 3.0
    for name in ("USER_REQUESTS_PER_S", "USER_REQUESTS_BURST", "USER_MAX_OPEN_JOBS"):
        with pytest.raises(SettingsError, match=name):
            load_settings(Settings, {name: "-1"})


def test_the_demo_page_is_on_in_dev_and_off_in_prod_unless_set() -> None:
    assert load_settings(Settings, {}).demo_page_on
    assert not load_settings(Settings, {"DEMO_PAGE": "false"}).demo_page_on
    prod = {**PROD, "AUTH_JWT_SECRET": secrets.token_urlsafe(32)}
    assert not load_settings(Settings, prod).demo_page_on
    assert load_settings(Settings, {**prod, "DEMO_PAGE": "true"}).demo_page_on
    with pytest.raises(SettingsError, match="DEMO_PAGE"):
        load_settings(Settings, {"DEMO_PAGE": "maybe"})


def test_stream_settings_have_defaults_and_bounds() -> None:
    settings = load_settings(Settings, {})
    assert (settings.sse_keepalive_s, settings.sse_queue_size, settings.sse_retry_ms) == (
        15.0,
        256,
        1000,
    )
    assert load_settings(Settings, {"SSE_KEEPALIVE_S": "0.5"}).sse_keepalive_s == 0.5
    with pytest.raises(SettingsError, match="SSE_KEEPALIVE_S"):
        load_settings(Settings, {"SSE_KEEPALIVE_S": "0"})
    with pytest.raises(SettingsError, match="SSE_QUEUE_SIZE"):
        load_settings(Settings, {"SSE_QUEUE_SIZE": "0"})


def test_the_stream_resync_runs_every_10_s_by_default_and_zero_turns_it_off() -> None:
    assert load_settings(Settings, {}).sse_resync_s == 10.0
    assert load_settings(Settings, {"SSE_RESYNC_S": "0"}).sse_resync_s == 0.0
    assert load_settings(Settings, {"SSE_RESYNC_S": "0.5"}).sse_resync_s == 0.5
    for bad in ("-1", "inf", "nan", "3601", "soon"):
        with pytest.raises(SettingsError, match="SSE_RESYNC_S"):
            load_settings(Settings, {"SSE_RESYNC_S": bad})


def test_the_job_store_timeout_is_2_s_by_default_positive_and_at_most_a_minute() -> None:
    assert load_settings(Settings, {}).job_store_timeout_s == 2.0
    assert load_settings(Settings, {"JOB_STORE_TIMEOUT_S": "15"}).job_store_timeout_s == 15.0
    for bad in ("0", "-1", "61", "inf", "nan", "soon"):
        with pytest.raises(SettingsError, match="JOB_STORE_TIMEOUT_S"):
            load_settings(Settings, {"JOB_STORE_TIMEOUT_S": bad})


def test_stream_caps_are_on_by_default_and_zero_turns_them_off() -> None:
    settings = load_settings(Settings, {})
    assert (settings.user_max_streams, settings.max_streams) == (20, 4000)
    off = load_settings(Settings, {"USER_MAX_STREAMS": "0", "MAX_STREAMS": "0"})
    assert (off.user_max_streams, off.max_streams) == (0, 0)
    for name in ("USER_MAX_STREAMS", "MAX_STREAMS"):
        with pytest.raises(SettingsError, match=name):
            load_settings(Settings, {name: "-1"})


def test_budgets_are_off_by_default_and_in_micro_dollars_when_set() -> None:
    default = load_settings(Settings, {})
    assert (default.user_budget_micros, default.global_budget_micros) == (None, None)
    assert default.auth_budget_claim == "budget_usd"
    settings = load_settings(
        Settings,
        {
            "USER_BUDGET_USD": "12.5",
            "GLOBAL_BUDGET_USD_PER_DAY": "0.1",
            "AUTH_BUDGET_CLAIM": "https://example.com/plan_usd",
        },
    )
    assert (settings.user_budget_micros, settings.global_budget_micros) == (12_500_000, 100_000)
    assert settings.auth_budget_claim == "https://example.com/plan_usd"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("USER_BUDGET_USD", "-1"),
        ("USER_BUDGET_USD", "inf"),
        ("USER_BUDGET_USD", "ten"),
        ("GLOBAL_BUDGET_USD_PER_DAY", "nan"),
        ("GLOBAL_BUDGET_USD_PER_DAY", "1e13"),
        ("AUTH_BUDGET_CLAIM", ""),
        ("AUTH_BUDGET_CLAIM", "two words"),
    ],
)
def test_a_bad_budget_setting_is_named(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(Settings, {variable: value})


# --- job tokens and the expiry leeway ------------------------------------------------------


def test_job_tokens_have_a_dev_secret_and_a_15_minute_life_by_default() -> None:
    settings = load_settings(Settings, {})
    assert settings.job_token_secrets == (DEV_JOB_TOKEN_SECRET,)
    assert settings.job_token_ttl_s == 900
    assert settings.auth_jwt_leeway_s == 30
    rotation = load_settings(Settings, {"JOB_TOKEN_SECRET": "new-one, old-one"})
    assert rotation.job_token_secrets == ("new-one", "old-one")


def test_prod_requires_its_own_job_token_secret() -> None:
    without = {k: v for k, v in PROD.items() if k != "JOB_TOKEN_SECRET"}
    env = {**without, "AUTH_JWT_SECRET": secrets.token_urlsafe(32)}
    with pytest.raises(SettingsError, match=r"^JOB_TOKEN_SECRET: missing"):
        load_settings(Settings, env)
    with pytest.raises(SettingsError, match=r"^JOB_TOKEN_SECRET: the secret is published"):
        load_settings(Settings, {**env, "JOB_TOKEN_SECRET": DEV_JOB_TOKEN_SECRET})
    with pytest.raises(SettingsError, match=r"^JOB_TOKEN_SECRET: the secret is shorter than 32"):
        load_settings(Settings, {**env, "JOB_TOKEN_SECRET": "x" * 31})
    assert load_settings(Settings, {**env, "JOB_TOKEN_SECRET": "x" * 32})


def test_the_job_token_secret_must_not_be_a_session_secret() -> None:
    shared = secrets.token_urlsafe(32)
    with pytest.raises(SettingsError, match=r"^JOB_TOKEN_SECRET: must differ"):
        load_settings(Settings, {"AUTH_JWT_SECRET": f"a,{shared}", "JOB_TOKEN_SECRET": shared})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JOB_TOKEN_TTL_S", "0"),
        ("JOB_TOKEN_TTL_S", "86401"),
        ("AUTH_JWT_LEEWAY_S", "-1"),
        ("AUTH_JWT_LEEWAY_S", "3601"),
        ("AUTH_JWT_LEEWAY_S", "soon"),
    ],
)
def test_job_token_life_and_leeway_are_bounded(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}"):
        load_settings(Settings, {variable: value})
    assert load_settings(Settings, {"AUTH_JWT_LEEWAY_S": "0"}).auth_jwt_leeway_s == 0
