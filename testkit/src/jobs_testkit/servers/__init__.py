"""Throwaway NATS and PostgreSQL servers for tests and fault tests, local or in Docker.

Every server can be stopped, killed, paused and restarted with its data kept (see
`RestartableServer`), so fault tests can break it mid-test.
"""

from jobs_testkit.servers.base import LOOPBACK as LOOPBACK
from jobs_testkit.servers.base import RestartableServer, free_port
from jobs_testkit.servers.cluster import NatsCluster
from jobs_testkit.servers.docker import DockerNatsServer, DockerPostgresServer, docker_available
from jobs_testkit.servers.nats import NATS_MAX_PAYLOAD as NATS_MAX_PAYLOAD
from jobs_testkit.servers.nats import NatsServer
from jobs_testkit.servers.postgres import PostgresServer

# LOOPBACK and NATS_MAX_PAYLOAD were importable but never in __all__; the `as` keeps them so.
__all__ = [
    "DockerNatsServer",
    "DockerPostgresServer",
    "NatsCluster",
    "NatsServer",
    "PostgresServer",
    "RestartableServer",
    "docker_available",
    "free_port",
]
