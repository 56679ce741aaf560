"""Entry point of the `replicate-sim` command: Replicate's API on `HTTP_PORT` until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from jobs_runtime.http import HttpServer
from jobs_runtime.logs import configure_logging
from jobs_runtime.settings import SettingsError, load_settings
from replicate_sim.app import build_app
from replicate_sim.config import Settings
from replicate_sim.engine import Simulator

log = logging.getLogger("replicate_sim")


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator(settings)
    await sim.start()
    server = HttpServer(build_app(sim), "0.0.0.0", settings.http_port)
    try:
        await server.start()
        log.info("listening", extra={"port": server.port})
        await stop.wait()
    finally:
        await server.stop()
        await sim.stop()
    log.info("stopped")


def main() -> None:
    try:
        settings = load_settings(Settings)
    except SettingsError as exc:
        print(f"replicate-sim: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("replicate-sim", settings.log_level)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
