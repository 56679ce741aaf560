"""What every server of this package shares, local or Docker: the `RestartableServer` protocol,
`with` support, and the loopback address and port probes.
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Protocol, Self

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


def free_port() -> int:
    """Return a TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
    return port


def tcp_accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
