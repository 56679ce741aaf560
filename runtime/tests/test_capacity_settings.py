"""The capacity settings: dev defaults that fit, limits that are never 0 or negative, a sum that
must fit one node's store, and production's values (deploy/base/config/common.env) that fit the
`max_file_store` deploy's nats.conf gives each node."""

import re
from pathlib import Path

import pytest

from jobs_proto.stream import DEV_CAPACITY, MIB
from jobs_runtime.settings import ServiceSettings, SettingsError, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "base"
LIMITS = (
    "JOBS_STREAM_MAX_BYTES",
    "OUTPUT_STREAM_MAX_BYTES",
    "PARKED_STREAM_MAX_BYTES",
    "IDEMPOTENCY_BUCKET_MAX_BYTES",
    "CLAIMS_BUCKET_MAX_BYTES",
    "LIMITS_BUCKET_MAX_BYTES",
    "RESULTS_STORE_MAX_BYTES",
)


def test_dev_defaults_fit_the_dev_store() -> None:
    settings = load_settings(ServiceSettings, {})
    assert settings.capacity == DEV_CAPACITY
    assert settings.capacity.per_node_bytes <= 0.9 * settings.jetstream_max_file_store


def test_each_limit_reaches_the_capacity_it_names() -> None:
    env = {name: str((i + 2) * MIB) for i, name in enumerate(LIMITS)}
    capacity = load_settings(ServiceSettings, {**env, "STREAM_REPLICAS": "3"}).capacity
    assert capacity.replicas == 3
    for name in LIMITS:
        assert getattr(capacity, name.lower()) == int(env[name])
    assert capacity.per_node_bytes == sum(int(v) for v in env.values())


@pytest.mark.parametrize("name", LIMITS)
@pytest.mark.parametrize("value", ["0", "-1", "1000"])
def test_a_limit_of_nothing_or_less_than_a_message_is_refused(name: str, value: str) -> None:
    # 0 and -1 are JetStream's "no limit": never what an operator means here.
    with pytest.raises(SettingsError) as error:
        load_settings(ServiceSettings, {name: value})
    assert str(error.value) == f"{name}: Expected `int` >= {MIB}"


def test_limits_beyond_the_store_are_refused_naming_it() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(ServiceSettings, {"JETSTREAM_MAX_FILE_STORE": str(2048 * MIB)})
    line = str(error.value)
    assert line.startswith("JETSTREAM_MAX_FILE_STORE: the stream, bucket and Object Store limits")
    assert str(DEV_CAPACITY.per_node_bytes) in line
    assert "\n" not in line


def test_the_setup_bound_must_be_positive() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(ServiceSettings, {"JETSTREAM_SETUP_TIMEOUT_S": "0"})
    assert str(error.value) == "JETSTREAM_SETUP_TIMEOUT_S: Expected `float` > 0.0"


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines())
    return {k: v for k, v in (p for p in pairs if len(p) == 2) if not k.startswith("#")}


def _bytes(size: str) -> int:
    """A NATS config size ("8GB", "256MB"): powers of 1024, as nats-server reads them."""
    number, unit = re.fullmatch(r"(\d+)([KMGT]?)B?", size.upper()).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** " KMGT".index(unit or " ")


def test_production_limits_fit_each_node_of_the_deploy_cluster() -> None:
    common = _env_file(DEPLOY / "config" / "common.env")
    settings = load_settings(
        ServiceSettings,
        {k: v for k, v in common.items() if k != "APP_ENV" and not k.startswith("NATS_")},
    )
    for name in LIMITS:
        assert name in common, f"{name} is not set in common.env"
    (store,) = re.findall(
        r"^\s*max_file_store: (\S+)$", (DEPLOY / "nats" / "nats.conf").read_text(), re.M
    )
    # The setting says what the server has: the check in `load_settings` is then the real one.
    assert settings.jetstream_max_file_store == _bytes(store)
    assert settings.stream_replicas == 3
    assert settings.capacity.per_node_bytes <= 0.9 * _bytes(store)


def test_the_dev_overlay_sets_the_development_defaults() -> None:
    text = (DEPLOY.parent / "overlays" / "dev" / "kustomization.yaml").read_text()
    literals = dict(re.findall(r"^\s+- ([A-Z_]+)=(\S+)$", text, re.M))
    for name in LIMITS:
        assert int(literals[name]) == getattr(DEV_CAPACITY, name.lower()), name
    (store,) = re.findall(
        r"^\s*max_file_store: (\S+)$",
        (DEPLOY.parent / "overlays" / "dev" / "nats.conf").read_text(),
        re.M,
    )
    assert int(literals["JETSTREAM_MAX_FILE_STORE"]) == _bytes(store)
