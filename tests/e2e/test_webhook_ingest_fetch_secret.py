"""`webhook-ingest fetch-secret` as an operator runs it, against the Replicate simulator in this
process: the key alone on stdout, or one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

from jobs_runtime.http import HttpServer
from jobs_runtime.settings import load_settings
from jobs_testkit.processes import command_path
from jobs_testkit.servers import free_port
from replicate_sim.app import build_app
from replicate_sim.config import Settings as SimSettings
from replicate_sim.engine import Simulator
from webhook_ingest.config import Settings

SIM_SECRET: Final = "whsec_ZmV0Y2gtc2VjcmV0IHRlc3Qga2V5"
TOKEN: Final = "r8_right-token-for-the-test"


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str


@asynccontextmanager
async def simulator(**env: str) -> AsyncIterator[str]:
    """A simulator on a local port; yields its base URL."""
    sim = Simulator(load_settings(SimSettings, {"SIM_WEBHOOK_SECRET": SIM_SECRET, **env}))
    await sim.start()
    server = HttpServer(build_app(sim), "127.0.0.1", 0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()
        await sim.stop()


async def fetch_secret(env: Mapping[str, str]) -> Finished:
    """Runs the installed command while this loop keeps serving the simulator."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
    process = await asyncio.create_subprocess_exec(
        command_path("webhook-ingest"),
        "fetch-secret",
        env={**inherited, "APP_ENV": "dev", **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


def assert_one_line_failure(finished: Finished, code: int) -> str:
    assert finished.code == code, finished
    assert finished.stdout == ""
    assert finished.stderr.endswith("\n"), finished.stderr
    assert finished.stderr.count("\n") == 1, finished.stderr
    assert TOKEN not in finished.stderr
    return finished.stderr


async def test_the_key_alone_on_stdout_usable_as_the_secret() -> None:
    async with simulator(SIM_API_TOKEN=TOKEN) as url:
        finished = await fetch_secret({"REPLICATE_BASE_URL": url, "REPLICATE_API_TOKEN": TOKEN})
    assert (finished.code, finished.stdout, finished.stderr) == (0, SIM_SECRET + "\n", "")
    key = finished.stdout.strip()
    assert load_settings(Settings, {"REPLICATE_WEBHOOK_SECRET": key}).replicate_webhook_secret


async def test_a_wrong_token_is_one_line_and_exit_1() -> None:
    async with simulator(SIM_API_TOKEN="r8_another-token") as url:
        finished = await fetch_secret({"REPLICATE_BASE_URL": url, "REPLICATE_API_TOKEN": TOKEN})
    line = assert_one_line_failure(finished, 1)
    assert "401" in line
    assert SIM_SECRET not in line


async def test_an_unreachable_replicate_is_one_line_and_exit_1() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    finished = await fetch_secret({"REPLICATE_BASE_URL": nobody, "REPLICATE_API_TOKEN": TOKEN})
    assert "could not be reached" in assert_one_line_failure(finished, 1)


async def test_something_that_is_not_replicate_is_one_line_and_exit_1() -> None:
    # After `#` the API path is only a fragment: the simulator answers its config, not a key.
    async with simulator() as url:
        finished = await fetch_secret(
            {"REPLICATE_BASE_URL": url + "/_sim/config#", "REPLICATE_API_TOKEN": TOKEN}
        )
    assert_one_line_failure(finished, 1)


async def test_configuration_errors_are_one_line_and_exit_2() -> None:
    for env in (
        {"REPLICATE_BASE_URL": "ftp://replicate.example"},
        {"APP_ENV": "prod", "REPLICATE_BASE_URL": "https://api.replicate.com"},
    ):
        line = assert_one_line_failure(await fetch_secret(env), 2)
        assert line.startswith("webhook-ingest: configuration error: REPLICATE_"), line
