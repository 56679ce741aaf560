"""Leaving a NATS node cut off from its cluster: the node picked on reconnect, and a real
three-node cluster whose node a client is on is cut off by the firewall."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import nats
import pytest
from nats.aio.client import Server
from nats.js.api import StreamConfig

from jobs_runtime.nodes import RECONNECT_WAIT_S, NodeWatch
from jobs_testkit.servers.cluster import NatsCluster
from jobs_testkit.waiting import eventually


def server(url: str, reconnects: int = 0) -> Server:
    return Server(uri=urlparse(url), reconnects=reconnects)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_node_left_is_passed_over_until_its_time_is_up() -> None:
    clock = Clock()
    watch = NodeWatch(2.0, avoid_s=60.0, clock=clock)
    pool = [server("nats://a:4222"), server("nats://b:4222"), server("nats://c:4222")]
    watch.avoid("a:4222")
    picks = {watch.choose(pool, {})[0].uri.netloc for _ in range(200)}  # type: ignore[union-attr]
    assert picks == {"b:4222", "c:4222"}
    clock.now = 60.0
    picks = {watch.choose(pool, {})[0].uri.netloc for _ in range(200)}  # type: ignore[union-attr]
    assert picks == {"a:4222", "b:4222", "c:4222"}


def test_with_every_node_passed_over_any_is_taken_rather_than_none() -> None:
    watch = NodeWatch(2.0)
    watch.avoid("a:4222")
    picked, _ = watch.choose([server("nats://a:4222")], {})
    assert picked is not None
    assert picked.uri.netloc == "a:4222"


def test_a_node_that_refused_before_is_tried_after_a_wait() -> None:
    watch = NodeWatch(2.0)
    assert watch.choose([server("nats://a:4222")], {})[1] == 0.0
    assert watch.choose([server("nats://a:4222", reconnects=2)], {})[1] == RECONNECT_WAIT_S


def test_only_failures_in_a_row_leave() -> None:
    watch = NodeWatch(2.0, failures=3)
    assert [watch.failed(n) for n in range(5)] == [False, False, False, True, True]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "cluster") as running:
        yield running


async def test_a_client_on_a_node_cut_off_moves_to_another_and_reaches_jetstream(
    cluster: NatsCluster,
) -> None:
    setup = await nats.connect(cluster.urls)
    js = setup.jetstream()
    await js.add_stream(StreamConfig(name="WATCHED", subjects=["watched.>"], num_replicas=3))
    await setup.close()
    cut = 0
    watch = NodeWatch(0.3)
    # The cut node first in the list and no shuffle: the client starts on it; the watch alone
    # may move it.
    nc = await nats.connect(
        [cluster.nodes[cut].client_url, *cluster.urls[1:]],
        dont_randomize=True,
        reconnect_time_wait=0.2,
        reconnect_to_server_handler=watch.choose,
    )
    stop = asyncio.Event()
    watching = asyncio.create_task(watch.run(nc, stop))
    try:
        assert nc.connected_url is not None
        assert nc.connected_url.port == cluster.nodes[cut].port
        await asyncio.to_thread(cluster.cut, cut)

        async def moved_and_stored() -> bool:
            url = nc.connected_url
            if url is None or url.port == cluster.nodes[cut].port:
                return False
            try:
                await nc.jetstream(timeout=1).publish("watched.x", b"stored")
            except Exception:
                return False
            return True

        await eventually(
            moved_and_stored, within=30, what="left the cut node, stored through another"
        )
        assert watch.left >= 1
    finally:
        stop.set()
        await watching
        cluster.heal_all()
        await nc.close()
