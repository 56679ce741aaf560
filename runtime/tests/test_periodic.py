"""The periodic loop: rounds on time, at once while there is more, failures survived, and an
end as soon as the service stops."""

import asyncio
import logging

import pytest

from jobs_runtime.errors import Unavailable
from jobs_runtime.periodic import every


async def test_rounds_run_every_period_and_failures_do_not_end_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    rounds: list[int] = []

    async def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise Unavailable("the job-store did not answer")
        if len(rounds) == 3:
            raise RuntimeError("a bug")
        if len(rounds) == 5:
            stop.set()

    with caplog.at_level(logging.WARNING, logger="jobs_runtime.periodic"):
        await asyncio.wait_for(every(0.01, stop, "sweeping", work), 5)
    assert rounds == [0, 1, 2, 3, 4]
    messages = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert messages == [
        ("WARNING", "sweeping skipped this round: the job-store did not answer", False),
        ("ERROR", "sweeping failed this round", True),
    ]


async def test_a_round_with_more_to_do_is_followed_at_once() -> None:
    stop = asyncio.Event()
    rounds = 0

    async def work() -> bool:
        nonlocal rounds
        rounds += 1
        if rounds == 50:
            stop.set()
        return True

    # 50 rounds at a period of an hour: only possible without waiting between them.
    await asyncio.wait_for(every(3600, stop, "sweeping", work, first_at_once=True), 5)
    assert rounds == 50


async def test_stop_ends_the_wait_at_once() -> None:
    stop = asyncio.Event()
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    loop = asyncio.create_task(every(3600, stop, "purging", work))
    # One turn of the event loop: the task runs up to its first wait (there is no I/O before
    # it), so the stop below finds it waiting out the hour rather than not yet started.
    await asyncio.sleep(0)
    assert not loop.done()
    stop.set()
    await asyncio.wait_for(loop, 1)
    assert not ran
