"""Typed settings from the environment, with the contract's `APP_ENV` rules.

`APP_ENV=dev` gives every setting a working local default; `APP_ENV=prod` refuses to start
without the variables a service names as required or a secret the repository publishes (see
`jobs_runtime.secrets`), and any bad value stops it with one line naming the variable (never its
value: it may be a secret).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal, TypeVar

import msgspec

from jobs_proto.stream import DAY_S, DEV_CAPACITY, MIB, Capacity
from jobs_proto.subjects import Subjects
from jobs_runtime.secrets import Secret, check_secrets

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
# A stream's or bucket's `max_bytes`: never 0 or negative (JetStream's "no limit"), and room
# for at least one message of the largest size.
StoreBytes = Annotated[int, msgspec.Meta(ge=MIB)]


class SettingsError(Exception):
    """A missing or malformed setting; its message is the one line an operator sees."""


class EnvSettings(msgspec.Struct, kw_only=True, frozen=True, rename="upper"):
    """What every process reads from the environment, bus or not."""

    # Each alternative group is "A|B": in prod at least one of them must be set and non-empty.
    required_in_prod: ClassVar[tuple[str, ...]] = ()

    app_env: Literal["dev", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    # OpenTelemetry (`jobs_runtime.tracing`): spans go by OTLP/HTTP to this base URL (the
    # exporter appends `/v1/traces`); empty, tracing is off and costs nothing. The SDK reads
    # the other OTEL_* variables itself (OTEL_BSP_SCHEDULE_DELAY, OTEL_EXPORTER_OTLP_HEADERS).
    otel_exporter_otlp_endpoint: Annotated[str, msgspec.Meta(pattern=r"^(https?://\S+)?$")] = ""
    # The `service.name` spans carry; empty: the service's own name.
    otel_service_name: str = ""

    def check(self) -> None:
        """Cross-field rules; raise `SettingsError` naming the variable."""


class ServiceSettings(EnvSettings, frozen=True):
    """What every service on the bus reads; each extends it with its own fields and rules."""

    # Prod: the service's own NATS user (its allow lists are in `jobs_proto.permissions`), and
    # the server verified over TLS (see `check`).
    required_in_prod: ClassVar[tuple[str, ...]] = ("NATS_URL", "NATS_USER|NATS_CREDS")

    # Dev defaults point at the servers `make run` starts, never at a machine-wide install.
    nats_url: str = "nats://127.0.0.1:14222"
    nats_user: str = ""
    nats_password: Secret = ""
    # A `.creds` file (JWT and NKey seed), instead of NATS_USER / NATS_PASSWORD.
    nats_creds: str = ""
    # The CA that signed the server's certificate; set, the connection is TLS and verified.
    nats_tls_ca: str = ""
    jobs_stream: str = "JOBS"
    subject_prefix: str = ""
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    # Every service declares the stream alike, so this must be the same everywhere and at least
    # the job-store's JOB_RETENTION_S (it refuses to start otherwise).
    stream_max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 30 * DAY_S
    admin_port: Port = 0
    # JetStream capacity: the most bytes each stream, bucket and Object Store may hold, per
    # replica. JetStream reserves each `max_bytes` on every node holding a replica, so together
    # they must fit in one node's `max_file_store` (`JETSTREAM_MAX_FILE_STORE`); every service
    # declares them alike, so these belong in the settings all services share. Dev defaults fit
    # a test server; deploy/README.md "Capacity" sizes them from jobs per day.
    jobs_stream_max_bytes: StoreBytes = DEV_CAPACITY.jobs_stream_max_bytes
    output_stream_max_bytes: StoreBytes = DEV_CAPACITY.output_stream_max_bytes
    parked_stream_max_bytes: StoreBytes = DEV_CAPACITY.parked_stream_max_bytes
    idempotency_bucket_max_bytes: StoreBytes = DEV_CAPACITY.idempotency_bucket_max_bytes
    claims_bucket_max_bytes: StoreBytes = DEV_CAPACITY.claims_bucket_max_bytes
    limits_bucket_max_bytes: StoreBytes = DEV_CAPACITY.limits_bucket_max_bytes
    results_store_max_bytes: StoreBytes = DEV_CAPACITY.results_store_max_bytes
    # One node's `max_file_store` (deploy/base/nats/nats.conf): the limits above must add up to
    # at most `STORE_SHARE` of it, the rest left for consumer state and Raft logs.
    jetstream_max_file_store: StoreBytes = 4096 * MIB
    # How long a service waits at start for JetStream to take its streams and buckets (a cluster
    # whose nodes are still starting refuses an R3 stream), not ready meanwhile, then exits.
    jetstream_setup_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    # How often a service asks JetStream whether its NATS node still reaches the cluster; three
    # failures in a row and it reconnects to another node (jobs_runtime.nodes). 0: never.
    nats_node_probe_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0

    # The share of `JETSTREAM_MAX_FILE_STORE` the limits may reserve together.
    STORE_SHARE: ClassVar[float] = 0.9

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    @property
    def capacity(self) -> Capacity:
        """Every stream's, bucket's and Object Store's limits, with the replica count."""
        return Capacity(
            replicas=self.stream_replicas,
            jobs_stream_max_bytes=self.jobs_stream_max_bytes,
            output_stream_max_bytes=self.output_stream_max_bytes,
            parked_stream_max_bytes=self.parked_stream_max_bytes,
            idempotency_bucket_max_bytes=self.idempotency_bucket_max_bytes,
            claims_bucket_max_bytes=self.claims_bucket_max_bytes,
            limits_bucket_max_bytes=self.limits_bucket_max_bytes,
            results_store_max_bytes=self.results_store_max_bytes,
        )

    def check(self) -> None:
        """Cross-field rules; raise `SettingsError` naming the variable."""
        try:
            Subjects(self.subject_prefix)
        except ValueError as exc:
            raise SettingsError(f"SUBJECT_PREFIX: {exc}") from None
        # Each node holds at most one replica of every stream, whatever the replica count: the
        # limits' sum is what one node reserves.
        reserved = self.capacity.per_node_bytes
        allowed = int(self.jetstream_max_file_store * self.STORE_SHARE)
        if reserved > allowed:
            raise SettingsError(
                f"JETSTREAM_MAX_FILE_STORE: the stream, bucket and Object Store limits"
                f" (*_MAX_BYTES) add up to {reserved} bytes per node, more than"
                f" {self.STORE_SHARE:.0%} of its {self.jetstream_max_file_store}"
            )
        if self.nats_user and self.nats_creds:
            raise SettingsError("NATS_CREDS: set either NATS_CREDS or NATS_USER, not both")
        if self.nats_user and not self.nats_password:
            raise SettingsError("NATS_PASSWORD: missing (required with NATS_USER)")
        if self.nats_password and not self.nats_user:
            raise SettingsError("NATS_USER: missing (required with NATS_PASSWORD)")
        for name, path in (("NATS_CREDS", self.nats_creds), ("NATS_TLS_CA", self.nats_tls_ca)):
            if path and not os.path.isfile(path):
                raise SettingsError(f"{name}: no such file")
        # A password must never cross the network in clear text: prod needs the server's CA,
        # or a `tls://` URL verified against the system's CAs.
        tls_urls = all(u.strip().startswith("tls://") for u in self.nats_url.split(","))
        if self.app_env == "prod" and not (self.nats_tls_ca or tls_urls):
            raise SettingsError(
                "NATS_TLS_CA: missing (required when APP_ENV=prod unless NATS_URL is tls://)"
            )

    @property
    def nats_auth(self) -> NatsAuth:
        """How this service proves who it is to NATS and checks the server."""
        return NatsAuth(
            user=self.nats_user,
            password=self.nats_password,
            creds=self.nats_creds,
            tls_ca=self.nats_tls_ca,
        )


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """Credentials and TLS trust for one NATS connection; empty strings: not used."""

    user: str = ""
    password: str = field(default="", repr=False)
    creds: str = ""
    tls_ca: str = ""


S = TypeVar("S", bound=EnvSettings)

_AT = re.compile(r" - at `\$\.(?P<name>[A-Z0-9_]+)`")


def load_settings(cls: type[S], environ: Mapping[str, str] | None = None) -> S:
    """Build `cls` from the environment or raise `SettingsError` with one line naming the cause."""
    env = dict(os.environ if environ is None else environ)
    app_env = env.get("APP_ENV", "dev")
    if app_env not in ("dev", "prod"):
        raise SettingsError("APP_ENV: must be 'dev' or 'prod'")
    if app_env == "prod":
        for group in cls.required_in_prod:
            names = group.split("|")
            if not any(env.get(name) for name in names):
                raise SettingsError(f"{' or '.join(names)}: missing (required when APP_ENV=prod)")
    try:
        settings = msgspec.convert(env, cls, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        at = _AT.search(message)
        if at is None:
            raise SettingsError(message) from None
        raise SettingsError(f"{at['name']}: {message[: at.start()]}") from None
    if settings.app_env == "prod" and (refused := check_secrets(settings)) is not None:
        name, reason = refused
        raise SettingsError(f"{name}: {reason}; refused when APP_ENV=prod")
    settings.check()
    return settings
