"""The simulator's process settings (environment) and its run-time knobs (`/_sim/config`)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from jobs_runtime.settings import EnvSettings, Port

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class Settings(EnvSettings, frozen=True):
    """Fixed for the life of the process; the knobs below change while it runs."""

    http_port: Port = 8010
    # Where clients reach the simulator, for `urls.*` and list cursors; default: 127.0.0.1.
    sim_public_url: str = ""
    sim_api_token: str = ""
    sim_webhook_secret: str = "whsec_c2ltdWxhdG9yLWRldi13ZWJob29rLXNlY3JldA=="
    # Replicate removes a prediction's data after an hour; the record itself is forgotten
    # after twice that, which bounds the simulator's memory.
    sim_data_retention_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    sim_webhook_concurrency: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 128
    sim_webhook_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    # Seconds between the attempts of a final webhook that is not answered 2xx (about a
    # minute in all, as Replicate does).
    sim_webhook_retry_s: str = "1,2,4,8,15,30"
    # Seconds a `urls.stream` connection may go without an event: before the first one it is
    # answered `408`, after it the connection ends (Replicate's 30 s).
    sim_stream_idle_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    # A stream reader wakes at most this often: faster text shares an event. Each event costs
    # the simulator about 0.1 ms of CPU, so a load of thousands of readers may want it longer.
    sim_stream_tick_s: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.02

    @property
    def retry_delays(self) -> tuple[float, ...]:
        return tuple(float(x) for x in self.sim_webhook_retry_s.split(",") if x.strip())

    def check(self) -> None:
        from jobs_runtime.settings import SettingsError

        try:
            delays = self.retry_delays
        except ValueError:
            raise SettingsError(
                "SIM_WEBHOOK_RETRY_S: not a comma-separated list of seconds"
            ) from None
        if any(d < 0 for d in delays):
            raise SettingsError("SIM_WEBHOOK_RETRY_S: delays must not be negative")
        if not self.sim_webhook_secret.startswith("whsec_"):
            raise SettingsError("SIM_WEBHOOK_SECRET: must start with whsec_")


class Knobs(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """The contract's `/_sim/config` fields; each applies to what happens after it is set."""

    latency_s: Annotated[float, msgspec.Meta(ge=0.0, le=86_400.0)] = 2.0
    prediction_fail_rate: Rate = 0.0
    abort_rate: Rate = 0.0
    api_error_rate: Rate = 0.0
    api_error_after_create: bool = False
    create_rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] | None = None
    drop_webhook_rate: Rate = 0.0
    duplicate_webhook_rate: Rate = 0.0
    reorder_webhooks: bool = False
    hold_webhooks: bool = False
    # Tokens a second at which a prediction writes its text, fixed at its creation.
    tokens_per_s: Annotated[float, msgspec.Meta(gt=0.0, le=1_000_000.0)] = 50.0
    # Share of `urls.stream` connections cut (the TCP connection closed) before `done`.
    stream_drop_rate: Rate = 0.0
    # Seconds after a prediction ends at which its output and input are removed, fixed at its
    # creation. Under the `SIM_DATA_RETENTION_S` cap the sweep applies; below it a timer does,
    # so a test can make a result expire before anyone reads it.
    data_removed_after_s: Annotated[float, msgspec.Meta(ge=0.0, le=86_400.0)] = 3600.0


def merge_knobs(current: Knobs, patch: object) -> Knobs:
    """The knobs with `patch` applied; raises `msgspec.ValidationError` for an unknown field or
    a bad value, leaving `current` as it was."""
    if not isinstance(patch, dict):
        raise msgspec.ValidationError("Expected `object`")
    return msgspec.convert({**msgspec.to_builtins(current), **patch}, Knobs)
