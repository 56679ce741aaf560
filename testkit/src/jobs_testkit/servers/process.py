"""The lifecycle of a local server run as a subprocess on a fixed loopback port.

`ProcessServer` starts, stops, kills, pauses and restarts the process tree; subclasses say how to
launch the server, when it is ready, and how to ask it to shut down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from jobs_testkit.servers.base import ServerContext, free_port
from jobs_testkit.servers.proctree import POLL_INTERVAL, descendants, send_signal, wait_gone

_LOG_TAIL_BYTES = 4000


def log_tail(path: Path) -> str:
    """The last few KB of a log, for error messages; never raises."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"


def read_from(path: Path, offset: int) -> str:
    """The log from offset on; empty while the file does not exist yet."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class ProcessServer(ServerContext):
    """Lifecycle shared by the local servers: one Popen, always waited for, plus its children."""

    _display_name = "server"
    # Kept in the workdir across restarts; start() reads only what the current run appended.
    _log_name = "server.log"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self._workdir = Path(workdir)
        # Chosen once so that every restart comes back on the port clients already know.
        self._port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused_pids: list[int] = []

    @property
    def port(self) -> int:
        return self._port

    @property
    def workdir(self) -> Path:
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self._workdir / self._log_name

    @property
    def pid(self) -> int | None:
        """Pid of the main server process while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive; a paused server still counts as running."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Launch the server and wait until it serves clients, else raise RuntimeError."""
        if self.running:
            raise RuntimeError(f"{self._display_name} on port {self._port} is already running")
        self._proc = None
        self._workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        # The log survives restarts; only lines written after this offset belong to this run.
        log_offset = log_size(self.log_path)
        deadline = time.monotonic() + timeout
        self._proc = self._launch()
        try:
            self._wait_ready(self._proc, log_offset, deadline, timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the server down gracefully, killing it if it takes longer than timeout."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # A stopped process would only act on the shutdown signal once continued.
            self.resume()
            self._request_shutdown(proc.pid)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._proc = None
        self._paused_pids = []

    def kill(self) -> None:
        """Crash the server: SIGKILL it and all its child processes, without any shutdown."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # Frozen first so it cannot fork new children between listing them and killing.
            send_signal([proc.pid], signal.SIGSTOP)
            children = descendants(proc.pid)
            send_signal([proc.pid, *children], signal.SIGKILL)
            proc.wait()
            # Orphans holding shared memory or ports would block the next start.
            wait_gone(children, timeout=5.0)
        self._proc = None
        self._paused_pids = []

    def pause(self) -> None:
        """Freeze the server and its children (SIGSTOP): connections hang instead of failing."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self._display_name} on port {self._port} is not running")
        if self._paused_pids:
            return
        # Children too, else already-connected clients would keep being served.
        send_signal([proc.pid], signal.SIGSTOP)
        self._paused_pids = [proc.pid, *descendants(proc.pid)]
        send_signal(self._paused_pids[1:], signal.SIGSTOP)

    def resume(self) -> None:
        """Undo pause() (SIGCONT); does nothing if the server is not paused."""
        send_signal(reversed(self._paused_pids), signal.SIGCONT)
        self._paused_pids = []

    def restart(self, timeout: float = 10.0) -> None:
        """Stop gracefully and start again on the same port with the same data."""
        self.stop(timeout)
        self.start(timeout)

    def close(self) -> None:
        """Stop the server if it runs; the workdir is left alone because the caller owns it."""
        self.stop()

    def _prepare(self) -> None:
        """Make the workdir ready for a launch; runs before every start."""

    def _launch(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _is_ready(self, log_offset: int) -> bool:
        raise NotImplementedError

    def _request_shutdown(self, pid: int) -> None:
        send_signal([pid], signal.SIGTERM)

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], log_offset: int, deadline: float, timeout: float
    ) -> None:
        while True:
            code = proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self._display_name} on port {self._port} exited with code {code} while "
                    f"starting; log tail:\n{log_tail(self.log_path)}"
                )
            if self._is_ready(log_offset):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self._display_name} on port {self._port} not ready after {timeout}s; "
                    f"log tail:\n{log_tail(self.log_path)}"
                )
            time.sleep(POLL_INTERVAL)
