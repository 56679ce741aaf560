"""Byte-level fuzzing of the admin app every service serves (`/healthz`, `/readyz`, `/metrics`),
with each service's readiness checks passing or failing: no `5xx` but `/readyz`'s documented
`503`, no traceback in the log, and never the text of a failing check's exception."""

from __future__ import annotations

from typing import Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs_runtime.admin import Readiness, admin_app
from jobs_testkit import rawhttp

# The checks each service adds (runtime/service.py adds `nats` to all of them).
SERVICE_CHECKS: Final = {
    "gateway": ("nats",),
    "webhook-ingest": ("nats", "jetstream"),
    "ai-runner": ("nats",),
    "job-store": ("nats", "postgres"),
}
# What a failing dependency's exception might say, and `/readyz` must not.
LEAK: Final = "postgresql://jobs:hunter2@db.internal:5432/jobs"
FUZZ: Final = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Dependency:
    """A readiness check whose dependency is up or down, as the example says."""

    def __init__(self) -> None:
        self.up = True

    async def __call__(self) -> None:
        if not self.up:
            raise ConnectionError(f"cannot reach {LEAK}")


@FUZZ
@given(service=st.sampled_from(sorted(SERVICE_CHECKS)), data=st.data(), started=st.booleans())
async def test_no_admin_request_gets_a_5xx_but_readyz_503_or_leaks_a_cause(
    service: str, data: st.DataObject, started: bool
) -> None:
    readiness = Readiness()
    dependencies = {name: Dependency() for name in SERVICE_CHECKS[service]}
    for name, dependency in dependencies.items():
        dependency.up = data.draw(st.booleans(), label=f"{name} up")
        readiness.add(name, dependency)
    if started:
        readiness.mark_started()
    app = admin_app(readiness)
    routes = rawhttp.route_table(app)
    request = data.draw(
        st.one_of(
            st.sampled_from(routes).flatmap(
                lambda route: rawhttp.requests_to(*route, header_names=("accept", "host"))
            ),
            rawhttp.requests_anywhere(routes, header_names=("accept", "host")),
        )
    )
    with rawhttp.LogCapture.installed() as log:
        answer = await rawhttp.send(app, request)
    if answer.status == 503:
        # Starlette's routes end in `$`, which also matches before a trailing newline: harmless
        # here, `/readyz%0A` is `/readyz`.
        assert request.raw_path.removesuffix(b"%0A") == b"/readyz"
        assert not started or not all(d.up for d in dependencies.values())
    else:
        assert answer.status < 500, answer.status
    assert LEAK.encode() not in answer.body
    assert log.tracebacks() == []
    assert not any(LEAK in line for line in log.lines)
