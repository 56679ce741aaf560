"""Runs the real entry points as subprocesses, as an operator does, and waits on their ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from jobs_testkit.waiting import eventually


def command_path(name: str) -> str:
    """An installed console command of this environment (`gateway`, `job-store`, ...)."""
    return str(Path(sys.executable).parent / name)


class ServiceProcess:
    """One service process; its output (JSON logs) goes to a file for assertions, or to this
    process's own stdout and stderr when `log_path` is None (`make run`)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path | None,
        *,
        group: bool = False,
    ) -> None:
        """`group`: the process leads a process group of its own, and signals go to the whole
        group, for a command that forks the real server (`next start` does) which would
        otherwise outlive the test."""
        self.argv = list(argv)
        self.env = {**os.environ, "APP_ENV": "dev", **env}
        self.log_path = log_path
        self.group = group
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        if self.log_path is None:
            self._process = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
            return self
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.group,
            )
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self._process is not None, "not started"
        return self._process

    @property
    def log(self) -> str:
        if self.log_path is None:
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_http(self, url: str, timeout: float = 15.0, status: int = 200) -> httpx.Response:
        """Poll `url` until it answers `status`; fail early if the process died."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited {self.process.returncode}:\n{self.log}")
            try:
                response = httpx.get(url, timeout=1.0)
                if response.status_code == status:
                    return response
                last = response.status_code
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not answer {status} (last: {last!r}):\n{self.log}")

    def signal(self, sig: signal.Signals) -> None:
        if self.group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code (SIGKILL after `timeout`, then a negative code)."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait()
        finally:
            if self.group:
                # What the leader forked goes with it, whatever the leader did on SIGTERM.
                self.signal(signal.SIGKILL)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        if self.group:
            self.signal(signal.SIGKILL)
        elif self._process.poll() is None:
            self._process.kill()
        self._process.wait()


async def until_serving(process: ServiceProcess, check: str, within: float = 15.0) -> None:
    """Until the process's `/readyz` answers 200 with its own `check` among the answers.

    The runtime answers `/readyz` before a service has registered its checks, so a bare 200
    can come before it serves (the job-store's `postgres`, say)."""
    readyz = f"http://127.0.0.1:{process.env['ADMIN_PORT']}/readyz"

    async def serving() -> bool:
        assert process.process.poll() is None, process.log
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                response = await http.get(readyz)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and check in response.json()["checks"]

    await eventually(serving, within=within)
