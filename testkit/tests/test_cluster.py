"""The three-node JetStream cluster: rendered from deploy's nats.conf, its faults done for real
(a leader killed, a disk wiped, a node cut off), and the services' streams all R3 on it."""

from __future__ import annotations

import asyncio
import re
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.js.api import StreamConfig

from jobs_testkit.servers import free_port
from jobs_testkit.servers.cluster import DEPLOY_NATS_CONF, NatsCluster, render_node_config
from jobs_testkit.stack import Ports, Stack
from jobs_testkit.waiting import eventually


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster") as running:
        yield running


def test_a_node_config_is_the_deploy_file_with_loopback_ports(tmp_path: Path) -> None:
    source = DEPLOY_NATS_CONF.read_text()
    config = render_node_config(
        source,
        name="nats-1",
        port=1001,
        monitor_port=1002,
        cluster_port=1003,
        routes=[2003, 3003],
        workdir=tmp_path,
    )
    # What production sets is kept as shipped.
    for kept in ("max_payload", "lame_duck_duration", "lame_duck_grace_period"):
        (line,) = re.findall(rf"^{kept}: .*$", source, re.M)
        assert line in config
    assert re.search(r"^\s+name: ai-jobs$", config, re.M)
    assert "max_file_store: 8GB" in config
    # What is per node on one machine is substituted.
    assert 'server_name: "nats-1"' in config
    assert 'listen: "127.0.0.1:1001"' in config
    assert 'http: "127.0.0.1:1002"' in config
    assert 'listen: "127.0.0.1:1003"' in config
    assert re.findall(r"nats-route://127\.0\.0\.1:(\d+)", config) == ["2003", "3003"]
    assert "nats-headless" not in config
    assert "include " not in config


def test_a_deploy_file_of_another_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="routes"):
        render_node_config(
            re.sub(r"routes: \[.*?\]", "", DEPLOY_NATS_CONF.read_text(), flags=re.S),
            name="n",
            port=1,
            monitor_port=2,
            cluster_port=3,
            routes=[],
            workdir=tmp_path,
        )


async def _messages_on(cluster: NatsCluster, stream: str, node: int) -> int:
    info = await cluster.stream_info(stream, node)
    return int(info["state"]["messages"])


async def test_leader_killed_wiped_and_cut_off(cluster: NatsCluster) -> None:
    nc = await nats.connect(servers=cluster.urls)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"], num_replicas=3))
        for i in range(10):
            await js.publish("events.one", str(i).encode())
        leader = await cluster.leader("EVENTS")

        # The leader killed: another takes over and the stream keeps taking messages.
        cluster.kill(leader)

        async def new_leader() -> bool:
            try:
                return await cluster.leader("EVENTS") != leader
            except RuntimeError:
                return False

        await eventually(new_leader, within=20, what="a new leader")
        await js.publish("events.one", b"while one node is down")
        # Its disk lost too: it comes back empty and catches up from the others.
        cluster.wipe(leader)
        await asyncio.to_thread(cluster.start_node, leader)

        async def caught_up() -> bool:
            return await _messages_on(cluster, "EVENTS", leader) == 11

        await eventually(caught_up, within=20, what="the wiped node caught up")

        if not cluster.partitionable:
            pytest.skip("cutting a node off needs root and iptables")
        cut = (await cluster.leader("EVENTS") + 1) % 3
        cluster.cut(cut)
        await eventually(lambda: not cluster.nodes[cut].healthy(), within=20, what="cut off")
        # Through the nodes still together: a client of the cut-off node waits with it.
        rest = [n.client_url for n in cluster.nodes if n.index != cut]
        other = await nats.connect(servers=rest)
        try:
            await other.jetstream().publish("events.one", b"while one node is cut off")
        finally:
            await other.close()
        cluster.heal(cut)
        await asyncio.to_thread(cluster.wait_healthy, [cut], 30)
        assert await _messages_on(cluster, "EVENTS", cut) == 12
    finally:
        await nc.close()


@pytest.fixture
async def database(postgres_url: str) -> str:
    name = f"cluster_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _ = postgres_url.rpartition("/")
    return f"{base}/{name}"


MIB = 1024 * 1024
# Each limit its own size, so a stream given another's limit shows.
LIMITS = {
    "JOBS_STREAM_MAX_BYTES": 11 * MIB,
    "OUTPUT_STREAM_MAX_BYTES": 12 * MIB,
    "PARKED_STREAM_MAX_BYTES": 13 * MIB,
    "IDEMPOTENCY_BUCKET_MAX_BYTES": 14 * MIB,
    "CLAIMS_BUCKET_MAX_BYTES": 15 * MIB,
    "LIMITS_BUCKET_MAX_BYTES": 16 * MIB,
    "RESULTS_STORE_MAX_BYTES": 17 * MIB,
}
_LIMIT_OF = {
    "JOBS": "JOBS_STREAM_MAX_BYTES",
    "JOBS_OUTPUT": "OUTPUT_STREAM_MAX_BYTES",
    "JOBS_PARKED": "PARKED_STREAM_MAX_BYTES",
    "KV_JOBS_IDEMPOTENCY": "IDEMPOTENCY_BUCKET_MAX_BYTES",
    "KV_JOBS_CLAIMS": "CLAIMS_BUCKET_MAX_BYTES",
    "KV_JOBS_LIMITS": "LIMITS_BUCKET_MAX_BYTES",
    "OBJ_JOBS_RESULTS": "RESULTS_STORE_MAX_BYTES",
}


@pytest.mark.timeout(60)
async def test_services_make_every_stream_r3(
    cluster: NatsCluster, database: str, tmp_path: Path
) -> None:
    stack = Stack(
        nats_url=cluster.url,
        database_url=database,
        ports=Ports(*(free_port() for _ in range(7))),
        log_dir=tmp_path,
        overrides={"STREAM_REPLICAS": "3", **{name: str(size) for name, size in LIMITS.items()}},
    )
    stack.secure(cluster)
    await asyncio.to_thread(stack.start)
    try:
        nc = await nats.connect(servers=cluster.urls)
        try:
            streams = {str(s.config.name): s for s in await nc.jetstream().streams_info()}
        finally:
            await nc.close()
        assert set(_LIMIT_OF) <= set(streams), sorted(streams)
        for name, info in streams.items():
            assert info.config.num_replicas == 3, name
            # Every stream, bucket and Object Store bounded, each by its own setting.
            assert name in _LIMIT_OF, f"{name}: a stream without a capacity setting"
            assert info.config.max_bytes == LIMITS[_LIMIT_OF[name]], name
            assert info.cluster is not None, name
            assert info.cluster.leader is not None, name
            assert len(info.cluster.replicas or []) == 2, name
    finally:
        codes = await asyncio.to_thread(stack.stop)
    assert set(codes.values()) == {0}, codes
    assert cluster.violations() == []


async def test_with_tls_every_node_serves_the_one_certificate(tmp_path: Path) -> None:
    with NatsCluster(tmp_path / "cluster", tls=True) as cluster:
        assert cluster.certificate is not None
        context = ssl.create_default_context(cafile=str(cluster.certificate.ca_file))
        for url in cluster.urls:
            assert url.startswith("tls://")
            nc = await nats.connect(servers=[url], tls=context)
            await nc.close()
