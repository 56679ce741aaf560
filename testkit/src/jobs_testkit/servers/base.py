"""What every server of this package shares, local or Docker: the `RestartableServer` protocol,
`with` support, and the loopback address and port probes.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self

LOOPBACK = "127.0.0.1"


class RestartableServer(Protocol):
    """What fixtures and fault tests may do to any server of this package, local or Docker."""

    @property
    def port(self) -> int: ...

    @property
    def running(self) -> bool: ...

    def start(self, timeout: float = ...) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...

    def kill(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def restart(self, timeout: float = ...) -> None: ...

    def close(self) -> None: ...


class ServerContext:
    """Makes a server a context manager: started on entry, closed on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# Ports handed to servers come from below the kernel's ephemeral range: a port the kernel gave
# out with bind(0) is also what it gives any outgoing connection, so between the test kit's
# check and the server's bind another process's connection could take it (CI saw a cluster
# node fail with "address already in use" so).
_LISTEN_PORTS_FROM: Final = 10_000
_EPHEMERAL_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_floor() -> int | None:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _listen_ports(floor: int) -> range:
    """This process's share of the listening range: under pytest-xdist each worker has a slice
    of its own, so two workers never hand out one port between a check and a bind."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        index = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    except ValueError:
        count, index = 1, 0
    width = (floor - _LISTEN_PORTS_FROM) // max(count, 1)
    start = _LISTEN_PORTS_FROM + (index % max(count, 1)) * width
    return range(start, start + width)


# The next port this process tries: its slice walked in order from a random place, so one
# process never hands out a port twice in a row of picks (a cluster's nine ports drawn at
# random from 22,000 repeat one about once in 600 clusters), and processes sharing a slice
# start far apart.
_cursor: int | None = None


def free_port() -> int:
    """Return a TCP port on the loopback interface that was free a moment ago, outside the
    range the kernel picks outgoing connections' ports from where it says which that is."""
    global _cursor
    floor = _ephemeral_floor()
    if floor is not None and floor - _LISTEN_PORTS_FROM > 1_000:
        ports = _listen_ports(floor)
        if _cursor is None or _cursor not in ports:
            _cursor = random.randrange(ports.start, ports.stop)
        for _ in range(100):
            port = _cursor
            _cursor = port + 1 if port + 1 < ports.stop else ports.start
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        chosen: int = sock.getsockname()[1]
    return chosen


def tcp_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
