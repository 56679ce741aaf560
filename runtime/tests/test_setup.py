"""The start-up retry: waits out JetStream not being ready, gives up after its bound naming what
it waited for, raises any other error at once, and logs at most one line every few seconds."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

import nats.errors
import pytest
from nats.js.errors import BadRequestError, ServerError, ServiceUnavailableError

from jobs_runtime.setup import LOG_EVERY_S, SetupTimedOut, not_ready_yet, until_set_up


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failing(
    errors: list[Exception], clock: Clock | None = None, step_s: float = 0.0
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An attempt that raises `errors` in turn, then answers "done"; each call moves `clock`."""
    calls: list[int] = []

    async def attempt() -> str:
        calls.append(1)
        if clock is not None:
            clock.now += step_s
        if errors:
            raise errors.pop(0)
        return "done"

    return attempt, calls


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError(code=400, err_code=10005, description="no suitable peers for placement"),
        ServerError(code=500, err_code=10023, description="insufficient resources"),
        ServiceUnavailableError(code=503, err_code=10008, description="JetStream unavailable"),
        nats.errors.TimeoutError(),
        TimeoutError(),
        nats.errors.NoRespondersError(),
    ],
)
def test_what_a_forming_cluster_answers_is_not_ready_yet(error: Exception) -> None:
    assert not_ready_yet(error)


@pytest.mark.parametrize(
    "error",
    [
        BadRequestError(code=400, err_code=10058, description="stream name already in use"),
        ServerError(code=500, err_code=10047, description="insufficient storage resources"),
        ValueError("a bug"),
    ],
)
def test_what_waiting_cannot_mend_is_not(error: Exception) -> None:
    assert not not_ready_yet(error)


async def test_it_waits_out_a_cluster_that_is_forming() -> None:
    attempt, calls = failing(
        [
            nats.errors.TimeoutError(),
            BadRequestError(code=400, err_code=10005, description="no suitable peers"),
            ServiceUnavailableError(code=503, err_code=10008),
        ]
    )
    assert (
        await until_set_up(
            "stream JOBS", attempt, within_s=60, first_delay_s=0.001, max_delay_s=0.001
        )
        == "done"
    )
    assert len(calls) == 4


async def test_another_error_is_raised_at_once() -> None:
    refused = BadRequestError(code=400, err_code=10058, description="name in use")
    attempt, calls = failing([refused])
    with pytest.raises(BadRequestError) as error:
        await until_set_up(
            "stream JOBS", attempt, within_s=60, first_delay_s=0.001, max_delay_s=0.001
        )
    assert error.value is refused
    assert len(calls) == 1


async def test_after_its_bound_it_gives_up_naming_what_it_waited_for() -> None:
    clock = Clock()
    attempt, _ = failing([nats.errors.TimeoutError()] * 100, clock, step_s=10.0)
    with pytest.raises(SetupTimedOut) as error:
        await until_set_up(
            "claims bucket",
            attempt,
            within_s=30,
            monotonic=clock,
            first_delay_s=0.001,
            max_delay_s=0.001,
        )
    assert str(error.value).startswith("claims bucket: JetStream did not take it within 30 s")
    assert "(3 attempts)" in str(error.value)
    assert isinstance(error.value.__cause__, nats.errors.TimeoutError)


async def test_a_stop_ends_the_wait() -> None:
    stop = asyncio.Event()
    errors: list[Exception] = [nats.errors.TimeoutError()] * 100

    async def attempt() -> str:
        stop.set()  # SIGTERM while the first attempt is out
        raise errors.pop()

    with pytest.raises(SetupTimedOut):
        await until_set_up("stream JOBS", attempt, within_s=600, stop=stop)
    assert len(errors) == 99


async def test_one_warning_every_few_seconds_however_often_it_tries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    step_s = LOG_EVERY_S / 4
    attempt, calls = failing([nats.errors.TimeoutError()] * 12, clock, step_s=step_s)
    with caplog.at_level(logging.WARNING, logger="jobs_runtime.setup"):
        await until_set_up(
            "stream JOBS",
            attempt,
            within_s=600,
            monotonic=clock,
            first_delay_s=0.001,
            max_delay_s=0.001,
        )
    assert len(calls) == 13
    lines = [r for r in caplog.records if "JetStream not ready" in r.getMessage()]
    # 12 failures over 12 * step_s = 3 * LOG_EVERY_S: the first, then one per LOG_EVERY_S.
    assert len(lines) == 3
    assert all(r.getMessage().startswith("stream JOBS: JetStream not ready") for r in lines)
