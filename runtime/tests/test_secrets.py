"""Secret settings under `APP_ENV=prod`: a published value or a short HS256 key stops the
service with one line naming the variable, never the value; dev accepts both."""

from __future__ import annotations

import secrets

import msgspec
import pytest

from jobs_runtime.secrets import PUBLISHED, HS256Secret, Secret, SecretURL, secret_kind
from jobs_runtime.settings import ServiceSettings, SettingsError, load_settings

# What prod asks of every service's NATS connection, so only the secret under test can fail.
PROD = {
    "APP_ENV": "prod",
    "NATS_URL": "tls://nats:4222",
    "NATS_USER": "vault",
    "NATS_PASSWORD": secrets.token_urlsafe(24),
}


class VaultSettings(ServiceSettings, frozen=True):
    """One field of each secret kind, as a service would declare them."""

    api_token: Secret = "dev-only-replicate-token"
    signing_key: HS256Secret | None = None
    database_url: SecretURL = "postgresql://postgres@127.0.0.1:15432/jobs"
    display_name: str = "dev-only-jwt-secret"  # not a secret: never checked


def fresh_key() -> str:
    return secrets.token_urlsafe(32)


def refusal_of(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as error:
        load_settings(VaultSettings, {**PROD, "API_TOKEN": fresh_key(), **env})
    return str(error.value)


def test_fields_are_marked_by_their_type() -> None:
    fields = {f.name: f.type for f in msgspec.structs.fields(VaultSettings)}
    assert secret_kind(fields["api_token"]) == "plain"
    assert secret_kind(fields["signing_key"]) == "hs256"  # through `| None`
    assert secret_kind(fields["database_url"]) == "url"
    assert secret_kind(fields["display_name"]) is None


@pytest.mark.parametrize("published", sorted(PUBLISHED))
def test_prod_refuses_every_published_secret_naming_the_variable_only(published: str) -> None:
    line = refusal_of({"API_TOKEN": published})
    assert line.startswith("API_TOKEN: the secret is published in the repository")
    assert published not in line
    assert "\n" not in line


def test_each_part_of_a_rotation_list_counts() -> None:
    line = refusal_of({"API_TOKEN": f"{fresh_key()}, dev-only-jwt-secret"})
    assert line.startswith("API_TOKEN: secret 2 is published")


def test_the_password_inside_a_url_counts() -> None:
    line = refusal_of({"DATABASE_URL": "postgresql://jobs:dev-cluster-password@postgres/jobs"})
    assert line.startswith("DATABASE_URL: the secret is published")
    assert "dev-cluster-password" not in line
    own = f"postgresql://jobs:{fresh_key()}@db.internal:5432/jobs"
    assert load_settings(VaultSettings, {**PROD, "API_TOKEN": fresh_key(), "DATABASE_URL": own})


def test_hs256_keys_need_32_bytes_in_prod() -> None:
    short = "k" * 31
    line = refusal_of({"SIGNING_KEY": f"{fresh_key()},{short}"})
    assert line == (
        "SIGNING_KEY: secret 2 is shorter than 32 bytes, too weak for HS256;"
        " refused when APP_ENV=prod"
    )
    # Plain tokens are someone else's format: only HS256 keys have a length rule.
    assert load_settings(VaultSettings, {**PROD, "API_TOKEN": "r8_x", "SIGNING_KEY": "k" * 32})


def test_fresh_random_secrets_are_accepted_in_prod() -> None:
    key = fresh_key()
    env = {**PROD, "API_TOKEN": fresh_key(), "SIGNING_KEY": f"{key},{fresh_key()}"}
    settings = load_settings(VaultSettings, env)
    assert settings.signing_key is not None
    assert settings.signing_key.startswith(key)


def test_dev_accepts_its_published_defaults() -> None:
    settings = load_settings(VaultSettings, {"SIGNING_KEY": "short"})
    assert settings.api_token == "dev-only-replicate-token"
