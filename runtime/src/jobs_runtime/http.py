"""Runs an ASGI app with uvicorn in the service's own event loop, leaving signals to the service.

uvicorn's own main loop wakes ten times a second to look for a stop request; here it wakes once
a second (to refresh the `Date` header, all its tick does otherwise) and at once when stopped,
so an idle service costs next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any, Final

import uvicorn

_TICKS_PER_S = 10  # uvicorn's on_tick refreshes the `Date` header every tenth tick
# After `stop`, requests in hand get this long to finish before uvicorn cancels them; the
# shutdown budget of deploy/ counts it (deploy/tests/test_deploy_manifests.py).
GRACEFUL_CLOSE_S: Final = 10


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The service owns SIGTERM: it stops fetching before the HTTP side goes away.
        yield

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)
            # Always a multiple of ten: each tick is a once-a-second one.
            counter = (counter + _TICKS_PER_S) % 864_000


class HttpServer:
    """One uvicorn server bound to `host:port`; `port=0` picks a free one."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_CLOSE_S,
            # The client address is the peer's; a service that sits behind proxies decides
            # itself how many X-Forwarded-For hops to trust.
            proxy_headers=False,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (port in use, ...)
                raise RuntimeError("http server stopped before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.request_exit()
        await self._task
        self._task = None
