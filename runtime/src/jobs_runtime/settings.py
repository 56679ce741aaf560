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
from typing import Annotated, ClassVar, Literal, TypeVar

import msgspec

from jobs_proto.stream import DAY_S
from jobs_proto.subjects import Subjects
from jobs_runtime.secrets import check_secrets

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class SettingsError(Exception):
    """A missing or malformed setting; its message is the one line an operator sees."""


class EnvSettings(msgspec.Struct, kw_only=True, frozen=True, rename="upper"):
    """What every process reads from the environment, bus or not."""

    # Each alternative group is "A|B": in prod at least one of them must be set and non-empty.
    required_in_prod: ClassVar[tuple[str, ...]] = ()

    app_env: Literal["dev", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0

    def check(self) -> None:
        """Cross-field rules; raise `SettingsError` naming the variable."""


class ServiceSettings(EnvSettings, frozen=True):
    """What every service on the bus reads; each extends it with its own fields and rules."""

    required_in_prod: ClassVar[tuple[str, ...]] = ("NATS_URL",)

    # Dev defaults point at the servers `make run` starts, never at a machine-wide install.
    nats_url: str = "nats://127.0.0.1:14222"
    jobs_stream: str = "JOBS"
    subject_prefix: str = ""
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    # Every service declares the stream alike, so this must be the same everywhere and at least
    # the job-store's JOB_RETENTION_S (it refuses to start otherwise).
    stream_max_age_s: Annotated[float, msgspec.Meta(gt=0)] = 30 * DAY_S
    admin_port: Port = 0

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    def check(self) -> None:
        """Cross-field rules; raise `SettingsError` naming the variable."""
        try:
            Subjects(self.subject_prefix)
        except ValueError as exc:
            raise SettingsError(f"SUBJECT_PREFIX: {exc}") from None


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
