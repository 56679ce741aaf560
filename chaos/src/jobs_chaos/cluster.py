"""The cluster scenarios: one fault to a node of the three-node JetStream cluster (the `JOBS`
stream and every bucket R3) while the steady load runs, the node back and current before the
audit; they run on a `ChaosSystem` with `nodes=3`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from jobs_chaos.scenarios import Context, Fault, Scenario, Size
from jobs_chaos.system import Timing
from jobs_testkit.servers import NatsCluster

NODES = 3
# A node's catch-up and the cluster's elections after it, bounded for the wait before audit.
CURRENT_TIMEOUT_S = 120.0
# Lame duck lasts the deploy file's 30 s (nats-server's minimum) when clients are on the node.
UPGRADE_TIMEOUT_S = 90.0

Pick = Callable[[NatsCluster, str], Awaitable[int]]


def _cluster(ctx: Context) -> NatsCluster:
    nats = ctx.system.nats
    assert isinstance(nats, NatsCluster), "a cluster scenario runs on a ChaosSystem(nodes=3)"
    return nats


def _stream(ctx: Context) -> str:
    return ctx.system.stack.jobs_stream


async def _jobs_leader(cluster: NatsCluster, stream: str) -> int:
    return await cluster.leader(stream)


async def _jobs_follower(cluster: NatsCluster, stream: str) -> int:
    return (await cluster.followers(stream))[0]


async def _claims_leader(cluster: NatsCluster, stream: str) -> int:
    """The claims bucket's leader (`<JOBS>_CLAIMS` is the KV stream `KV_<JOBS>_CLAIMS`), once
    `JOBS` is led elsewhere: a leader of both would repeat the JOBS leader's scenario."""
    claims = f"KV_{stream}_CLAIMS"
    for _ in range(5):
        node = await cluster.leader(claims)
        if await cluster.leader(stream) != node:
            return node
        await cluster.step_down(stream)
        await _until_led(cluster, stream)
    raise RuntimeError(f"{stream} and {claims} stayed on one leader")


async def _until_led(cluster: NatsCluster, stream: str, within_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            await cluster.leader(stream)
            return
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _back_and_current(cluster: NatsCluster) -> None:
    """Every node healed, running and current again, whatever the fault left."""
    cluster.heal_all()
    for node in cluster.nodes:
        if not node.running:
            await asyncio.to_thread(cluster.start_node, node.index, CURRENT_TIMEOUT_S)
    await asyncio.to_thread(cluster.wait_healthy, None, CURRENT_TIMEOUT_S)


def _kill_node(pick: Pick, *, wipe: bool = False) -> Fault:
    """SIGKILL the picked node, keep it down for the pause, (wipe its store,) restart it."""

    async def fault(ctx: Context) -> None:
        cluster = _cluster(ctx)
        await ctx.until_fault()
        node = await pick(cluster, _stream(ctx))
        try:
            await asyncio.to_thread(cluster.kill, node)
            await asyncio.sleep(ctx.size.pause_s)
            if wipe:
                cluster.wipe(node)
        finally:
            await _back_and_current(cluster)

    return fault


async def _rolling_upgrade(ctx: Context) -> None:
    """Each node in turn as an upgrade stops it (lame duck, then exit), started again and
    current before the next, as the StatefulSet's rolling update with its startup probe."""
    cluster = _cluster(ctx)
    await ctx.until_fault()
    try:
        for node in cluster.nodes:
            await asyncio.to_thread(cluster.upgrade, node.index, UPGRADE_TIMEOUT_S)
    finally:
        await _back_and_current(cluster)


async def _cut_off(ctx: Context) -> None:
    """The node leading `JOBS` cut off from the other two for the pause (its clients still
    reach it and wait on it), then healed."""
    cluster = _cluster(ctx)
    await ctx.until_fault()
    node = await cluster.leader(_stream(ctx))
    try:
        await asyncio.to_thread(cluster.cut, node)
        await asyncio.sleep(ctx.size.pause_s)
    finally:
        await _back_and_current(cluster)


def _down_for_pause(size: Size, _timing: Timing) -> float:
    # A node down for the pause, then its catch-up and an election or two.
    return size.pause_s + 20.0


def _rolling(_size: Size, _timing: Timing) -> float:
    # Three lame ducks of up to 30 s, each followed by a restart and a catch-up.
    return NODES * 40.0


CLUSTER_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "NATS R3: SIGKILL a JOBS follower, restart",
        _kill_node(_jobs_follower),
        allowance_s=_down_for_pause,
        nodes=NODES,
    ),
    Scenario(
        "NATS R3: SIGKILL the JOBS leader, restart",
        _kill_node(_jobs_leader),
        allowance_s=_down_for_pause,
        nodes=NODES,
    ),
    Scenario(
        "NATS R3: SIGKILL claims KV leader, restart",
        _kill_node(_claims_leader),
        allowance_s=_down_for_pause,
        nodes=NODES,
    ),
    Scenario(
        "NATS R3: rolling restart, lame duck",
        _rolling_upgrade,
        allowance_s=_rolling,
        nodes=NODES,
    ),
    Scenario(
        "NATS R3: wipe JOBS leader's disk, catch up",
        _kill_node(_jobs_leader, wipe=True),
        allowance_s=_down_for_pause,
        nodes=NODES,
    ),
    Scenario(
        "NATS R3: cut JOBS leader off, heal",
        _cut_off,
        allowance_s=_down_for_pause,
        nodes=NODES,
    ),
)
