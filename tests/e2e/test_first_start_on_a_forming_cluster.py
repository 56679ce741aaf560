"""A first apply: the services start with the NATS nodes. The real gateway process on a
three-node cluster of which two run waits, alive and not ready, while its R3 streams cannot be
placed; once the third node is up it declares them with their limits, brings a bucket an
earlier release made R1 without limits to R3 with them, and serves."""

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js import api as js_api

from jobs_proto.stream import MIB
from jobs_runtime.results import bucket_name, result_store
from jobs_testkit.processes import ServiceProcess, command_path
from jobs_testkit.servers import free_port
from jobs_testkit.servers.cluster import NatsCluster
from jobs_testkit.waiting import eventually


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """Three nodes, none started."""
    nodes = NatsCluster(tmp_path / "cluster")
    try:
        yield nodes
    finally:
        nodes.close()


async def _status(url: str) -> int:
    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(url)).status_code
    except httpx.HTTPError:
        return 0


async def test_the_gateway_waits_for_the_third_node_then_declares_everything_r3(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    for i in (0, 1):
        cluster.start_node(i, wait_current=False)
    jobs = f"JOBS_{uuid.uuid4().hex[:8].upper()}"
    nc = await nats.connect(servers=cluster.urls[:2])
    js = nc.jetstream()
    try:
        # As an earlier release left it: one replica, no byte limit (two nodes place R1).
        async def made_r1() -> bool:
            try:
                await js.create_key_value(js_api.KeyValueConfig(bucket=f"{jobs}_IDEMPOTENCY"))
            except nats.errors.Error:
                return False  # the two nodes are still electing their meta leader
            return True

        await eventually(made_r1, within=30, what="an R1 bucket on two nodes")
        await js.create_object_store(bucket_name(jobs))

        admin = free_port()
        env = {
            "NATS_URL": cluster.url,
            "STREAM_REPLICAS": "3",
            "JOBS_STREAM": jobs,
            "SUBJECT_PREFIX": "first.",
            "ADMIN_PORT": str(admin),
            "HTTP_PORT": str(free_port()),
            "AUTH_JWT_SECRET": "first-start-secret-0123456789abcdef0123",
            "JOBS_STREAM_MAX_BYTES": str(8 * MIB),
            "OUTPUT_STREAM_MAX_BYTES": str(4 * MIB),
            "IDEMPOTENCY_BUCKET_MAX_BYTES": str(2 * MIB),
        }
        with ServiceProcess([command_path("gateway")], env, tmp_path / "gateway.log") as gateway:
            # Alive and waiting, not ready, not crashed: an R3 stream needs a third peer.
            await eventually(
                lambda: "JetStream not ready" in gateway.log, within=30, what="a retry logged"
            )
            assert await _status(f"http://127.0.0.1:{admin}/healthz") == 200
            assert await _status(f"http://127.0.0.1:{admin}/readyz") == 503
            assert gateway.process.poll() is None, gateway.log

            await asyncio.to_thread(cluster.start_node, 2)

            async def ready() -> bool:
                assert gateway.process.poll() is None, gateway.log
                return await _status(f"http://127.0.0.1:{admin}/readyz") == 200

            await eventually(ready, within=60, what="the gateway ready on three nodes")

            async def config(stream: str) -> js_api.StreamConfig:
                return (await js.stream_info(stream)).config

            stream = await config(jobs)
            assert (stream.num_replicas, stream.max_bytes) == (3, 8 * MIB)
            assert stream.discard == js_api.DiscardPolicy.NEW
            output = await config(f"{jobs}_OUTPUT")
            assert (output.num_replicas, output.max_bytes) == (3, 4 * MIB)
            bucket = await config(f"KV_{jobs}_IDEMPOTENCY")
            assert (bucket.num_replicas, bucket.max_bytes) == (3, 2 * MIB)
            assert gateway.terminate() == 0, gateway.log
        # The Object Store's writers bring it along the same way.
        await result_store(js, jobs, replicas=3, max_bytes=3 * MIB)
        store = await config(f"OBJ_{bucket_name(jobs)}")
        assert (store.num_replicas, store.max_bytes) == (3, 3 * MIB)
    finally:
        await nc.close()
