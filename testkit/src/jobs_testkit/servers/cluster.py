"""`NatsCluster`: three local nats-server nodes routed into one JetStream cluster, each rendered
from the configuration `deploy/base/nats/nats.conf` ships, and the faults a cluster can suffer:
a node killed, stopped as an upgrade stops it, wiped, or cut off from the others by the firewall.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nats
import nats.errors

from jobs_proto.permissions import NatsUser
from jobs_testkit.servers.base import LOOPBACK, ServerContext, free_port
from jobs_testkit.servers.nats import NatsServer
from jobs_testkit.servers.proctree import POLL_INTERVAL
from jobs_testkit.servers.tls import ServerCertificate

# The one source of the cluster's settings: what production's StatefulSet mounts.
DEPLOY_NATS_CONF = Path(__file__).resolve().parents[4] / "deploy" / "base" / "nats" / "nats.conf"
# Each node runs with its own group when the firewall can tell them apart (see `partitionable`).
_FIRST_GID = 61000


def _sub(pattern: str, replacement: str, text: str) -> str:
    """One substitution that must match exactly once: a deploy file that changed shape fails
    loudly here rather than drifting from what the test kit runs."""
    result, count = re.subn(pattern, lambda _m: replacement, text, flags=re.M | re.S)
    if count != 1:
        raise ValueError(f"{DEPLOY_NATS_CONF}: expected one match of {pattern!r}, got {count}")
    return result


def render_node_config(
    source: str,
    *,
    name: str,
    port: int,
    monitor_port: int,
    cluster_port: int,
    routes: Iterable[int],
    workdir: Path,
    tls: Iterable[str] = (),
    authorization: Iterable[str] = (),
    settings: Mapping[str, str] | None = None,
) -> str:
    """The deploy file's configuration for one loopback node: its name, ports, store, routes and
    files substituted, the rest (limits, lame duck, cluster name) kept as shipped; `settings`
    replaces other top-level values (a shorter lame duck in tests)."""
    q = json.dumps
    text = source
    text = _sub(r"^server_name: .*?$", f"server_name: {q(name)}", text)
    text = _sub(r"^port: \d+$", f"listen: {q(f'{LOOPBACK}:{port}')}", text)
    text = _sub(r"^http_port: \d+$", f"http: {q(f'{LOOPBACK}:{monitor_port}')}", text)
    text = _sub(r"^pid_file: .*?$", f"pid_file: {q(str(workdir / 'nats.pid'))}", text)
    text = _sub(r"^(\s+)store_dir: .*?$", f"  store_dir: {q(str(workdir / 'jetstream'))}", text)
    text = _sub(r"^(\s+)port: 6222$", f"  listen: {q(f'{LOOPBACK}:{cluster_port}')}", text)
    route_lines = "\n".join(f"    nats-route://{LOOPBACK}:{p}" for p in routes)
    text = _sub(r"^(\s+)routes: \[.*?\]$", f"  routes: [\n{route_lines}\n  ]", text)
    text = _sub(r"^include tls\.conf$", "\n".join(tls), text)
    text = _sub(r"^include users\.conf$", "\n".join(authorization), text)
    for key, value in (settings or {}).items():
        text = _sub(rf"^{re.escape(key)}: .*?$", f"{key}: {value}", text)
    return f"{text}\nlog_file: {q(str(workdir / 'nats-server.log'))}\n"


class ClusterNode(NatsServer):
    """One node of a `NatsCluster`: a `NatsServer` whose configuration is the deploy file's."""

    _display_name = "nats-server (cluster node)"

    def __init__(
        self,
        workdir: Path,
        *,
        index: int,
        cluster: NatsCluster,
        anonymous: bool,
        tls: bool,
        gid: int | None,
    ) -> None:
        super().__init__(workdir, anonymous=anonymous, tls=tls)
        self.index = index
        self.name = f"nats-{index}"
        self.monitor_port = free_port()
        self.cluster_port = free_port()
        self._cluster = cluster
        self.gid = gid

    def _write_config(self) -> None:
        config = render_node_config(
            self._cluster.source,
            name=self.name,
            port=self.port,
            monitor_port=self.monitor_port,
            cluster_port=self.cluster_port,
            routes=[n.cluster_port for n in self._cluster.nodes if n is not self],
            workdir=self.workdir,
            tls=self._tls(),
            authorization=self._authorization(),
            settings=self._cluster.settings,
        )
        self.config_path.write_text(config)
        self.config_path.chmod(0o600)

    def _prepare(self) -> None:
        super()._prepare()
        self.store_dir.mkdir(parents=True, exist_ok=True)

    def _launch_group(self) -> int | None:
        # Root still (it reads the test's private directories); only the group is the node's
        # own, which the firewall's owner match tells apart.
        return self.gid

    def wait_exit(self, timeout: float) -> None:
        """Wait up to `timeout` for the server to end by itself (after lame duck, say)."""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)

    @property
    def client_url(self) -> str:
        """This node alone (the cluster's `url` is the seed list of all three)."""
        scheme = "tls" if self.certificate else "nats"
        return f"{scheme}://{LOOPBACK}:{self.port}"

    def healthy(self) -> bool:
        """`/healthz`, what the StatefulSet's startup probe asks: the server runs and its
        JetStream is current with the cluster (every stream and consumer caught up)."""
        try:
            url = f"http://{LOOPBACK}:{self.monitor_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False


class NatsCluster(ServerContext):
    """Three (or `size`) clustered nodes with JetStream, routes between them over loopback.

    `url` is the seed list clients connect with. Users (`authorize`) and TLS are as on
    `NatsServer`, applied to every node.
    """

    def __init__(
        self,
        workdir: Path,
        size: int = 3,
        *,
        anonymous: bool = True,
        tls: bool = False,
        settings: Mapping[str, str] | None = None,
        source: Path = DEPLOY_NATS_CONF,
    ) -> None:
        self.workdir = Path(workdir)
        self.source = source.read_text()
        self.settings = dict(settings or {})
        self.partitionable = os.geteuid() == 0 and shutil.which("iptables") is not None
        self.nodes: list[ClusterNode] = []
        for i in range(size):
            node = ClusterNode(
                self.workdir / f"nats-{i}",
                index=i,
                cluster=self,
                anonymous=anonymous,
                # One certificate for the whole cluster, so clients trust every node.
                tls=tls and i == 0,
                gid=_FIRST_GID + i if self.partitionable else None,
            )
            node.certificate = self.nodes[0].certificate if self.nodes else node.certificate
            self.nodes.append(node)
        self._cut: dict[int, list[list[str]]] = {}

    # Lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return ",".join(n.client_url for n in self.nodes)

    @property
    def urls(self) -> list[str]:
        return [n.client_url for n in self.nodes]

    @property
    def running(self) -> bool:
        return all(n.running for n in self.nodes)

    @property
    def certificate(self) -> ServerCertificate | None:
        """What clients verify every node with (`NATS_TLS_CA`), when started with TLS."""
        return self.nodes[0].certificate

    def start(self, timeout: float = 60.0) -> None:
        """Start every node that is not running, then wait until all are healthy."""
        for node in self.nodes:
            if not node.running:
                node.start(timeout)
        self.wait_healthy(timeout=timeout)

    def wait_healthy(self, nodes: Iterable[int] | None = None, timeout: float = 60.0) -> None:
        chosen = [self.nodes[i] for i in nodes] if nodes is not None else self.nodes
        deadline = time.monotonic() + timeout
        while not all(n.healthy() for n in chosen):
            if time.monotonic() > deadline:
                sick = [n.name for n in chosen if not n.healthy()]
                raise RuntimeError(f"cluster nodes not current after {timeout}s: {sick}")
            time.sleep(POLL_INTERVAL)

    def stop(self, timeout: float = 10.0) -> None:
        for node in self.nodes:
            node.stop(timeout)

    def close(self) -> None:
        self.heal_all()
        for node in self.nodes:
            node.close()

    def restart(self, timeout: float = 60.0) -> None:
        """A rolling restart (`upgrade` of every node in turn)."""
        for i in range(len(self.nodes)):
            self.upgrade(i, timeout)

    def authorize(self, users: Iterable[NatsUser], timeout: float = 10.0) -> None:
        chosen = list(users)
        for node in self.nodes:
            node.authorize(chosen, timeout)

    def violations(self, user_prefix: str = "") -> list[str]:
        return [f"{n.name}: {line}" for n in self.nodes for line in n.violations(user_prefix)]

    # One node's faults ----------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL node i, no shutdown of any kind."""
        self.nodes[i].kill()

    def stop_node(self, i: int, timeout: float = 10.0) -> None:
        self.nodes[i].stop(timeout)

    def start_node(self, i: int, timeout: float = 60.0, *, wait_current: bool = True) -> None:
        self.nodes[i].start(timeout)
        if wait_current:
            self.wait_healthy([i], timeout)

    def wipe(self, i: int) -> None:
        """Delete node i's store (stop or kill it first): it comes back empty and catches up."""
        if self.nodes[i].running:
            raise RuntimeError(f"{self.nodes[i].name} is running; kill it before wiping")
        shutil.rmtree(self.nodes[i].store_dir, ignore_errors=True)

    def upgrade(self, i: int, timeout: float = 60.0) -> None:
        """Node i stopped as the StatefulSet stops it in an upgrade (the preStop hook's lame
        duck, which ends the server once clients have moved; SIGTERM if it has not), started
        again, and waited for until its JetStream is current."""
        node = self.nodes[i]
        pid = node.pid
        if pid is not None:
            os.kill(pid, signal.SIGUSR2)  # nats-server --signal ldm
            node.wait_exit(timeout)
            node.stop()
        self.start_node(i, timeout)

    # The firewall -----------------------------------------------------------------------

    def _rules(self, i: int) -> list[list[str]]:
        node = self.nodes[i]
        others = {n.cluster_port for n in self.nodes if n is not node}
        tag = ["-m", "comment", "--comment", f"jobs-testkit-cut-{os.getpid()}-{node.cluster_port}"]
        base = ["-o", "lo", "-p", "tcp"]
        assert node.gid is not None
        ports = ",".join(str(p) for p in sorted(others))
        rules = [
            # Routes others opened to it, both ways.
            [*base, "--dport", str(node.cluster_port), *tag, "-j", "DROP"],
            [*base, "--sport", str(node.cluster_port), *tag, "-j", "DROP"],
            # Routes it opens to the others, from now on and those open: its packets, told
            # apart by its group.
            [
                *base,
                "-m",
                "multiport",
                "--dports",
                ports,
                "-m",
                "owner",
                "--gid-owner",
                str(node.gid),
                *tag,
                "-j",
                "DROP",
            ],
        ]
        # The answers on the routes it had opened: by their ports, as a packet's owner is
        # the sender.
        for local, remote in _connections(node.pid):
            if remote in others:
                rules.append(
                    [*base, "--sport", str(remote), "--dport", str(local), *tag, "-j", "DROP"]
                )
        return rules

    def cut(self, i: int) -> None:
        """Cut node i off from the other nodes: every route packet to or from it dropped (its
        clients still reach it), as a network partition does."""
        if not self.partitionable:
            raise RuntimeError("cutting a node off needs root and iptables")
        if i in self._cut:
            return
        rules = self._rules(i)
        self._cut[i] = []
        for rule in rules:
            subprocess.run(["iptables", "-w", "-I", "OUTPUT", *rule], check=True, timeout=30)
            self._cut[i].append(rule)

    def heal(self, i: int) -> None:
        """Undo `cut(i)`."""
        for rule in self._cut.pop(i, []):
            subprocess.run(["iptables", "-w", "-D", "OUTPUT", *rule], check=False, timeout=30)

    def heal_all(self) -> None:
        for i in list(self._cut):
            self.heal(i)

    # What leads what ---------------------------------------------------------------------

    async def stream_info(self, stream: str, node: int | None = None) -> dict[str, Any]:
        """`$JS.API.STREAM.INFO.<stream>` as JSON, asked of one node or the seed list."""
        servers = self.urls if node is None else [self.nodes[node].client_url]
        nc = await nats.connect(servers=servers, connect_timeout=5, max_reconnect_attempts=3)
        try:
            reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
        finally:
            await nc.close()
        info: dict[str, Any] = json.loads(reply.data)
        if "error" in info:
            raise RuntimeError(f"stream info {stream}: {info['error']}")
        return info

    async def leader(self, stream: str) -> int:
        """The index of the node leading `stream` (a KV bucket's is `KV_<bucket>`), as the
        first running node that knows one says (a node cut off knows none)."""
        seen: list[object] = []
        for node in self.nodes:
            if not node.running or node.index in self._cut:
                continue
            try:
                info = await self.stream_info(stream, node.index)
            except (OSError, RuntimeError, nats.errors.Error) as exc:
                seen.append(exc)
                continue
            name = info.get("cluster", {}).get("leader")
            for candidate in self.nodes:
                if candidate.name == name:
                    return candidate.index
            seen.append(info.get("cluster"))
        raise RuntimeError(f"stream {stream} has no leader now: {seen}")

    async def step_down(self, stream: str) -> None:
        """Ask `stream`'s leader to hand over (`$JS.API.STREAM.LEADER.STEPDOWN.<stream>`)."""
        nc = await nats.connect(servers=self.urls, connect_timeout=5, max_reconnect_attempts=3)
        try:
            reply = await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=10)
        finally:
            await nc.close()
        answer = json.loads(reply.data)
        if "error" in answer:
            raise RuntimeError(f"step down {stream}: {answer['error']}")

    async def followers(self, stream: str) -> list[int]:
        lead = await self.leader(stream)
        return [n.index for n in self.nodes if n.index != lead]


def _connections(pid: int | None) -> list[tuple[int, int]]:
    """The (local port, remote port) of each established loopback TCP connection of `pid`."""
    if pid is None:
        return []
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes:
            found.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16)))
    return found
