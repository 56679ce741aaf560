"""The job-store's settings: in prod, a `DATABASE_URL` whose password the repository publishes
is refused, by the service and by `job-store migrate` alike."""

import secrets

import pytest

from job_store.config import MigrateSettings, Settings
from jobs_runtime.secrets import PUBLISHED
from jobs_runtime.settings import EnvSettings, SettingsError, load_settings

# Prod needs the service's own NATS user (and TLS: the URLs are tls://).
PROD_NATS = {"NATS_USER": "svc", "NATS_PASSWORD": secrets.token_urlsafe(24)}
PROD = {"APP_ENV": "prod", "NATS_URL": "tls://nats:4222", **PROD_NATS}


@pytest.mark.parametrize("settings_type", [Settings, MigrateSettings])
@pytest.mark.parametrize("published", sorted(PUBLISHED))
def test_prod_refuses_a_published_database_password(
    settings_type: type[EnvSettings], published: str
) -> None:
    url = f"postgresql://jobs:{published}@postgres:5432/jobs"
    with pytest.raises(SettingsError) as error:
        load_settings(settings_type, {**PROD, "DATABASE_URL": url})
    assert str(error.value).startswith("DATABASE_URL: the secret is published")
    assert published not in str(error.value)


@pytest.mark.parametrize("settings_type", [Settings, MigrateSettings])
def test_prod_accepts_a_password_of_its_own_and_dev_its_default(
    settings_type: type[EnvSettings],
) -> None:
    url = f"postgresql://jobs:{secrets.token_urlsafe(24)}@db.internal:5432/jobs"
    assert load_settings(settings_type, {**PROD, "DATABASE_URL": url})
    assert load_settings(settings_type, {"DATABASE_URL": "postgresql://jobs:password@db/jobs"})
